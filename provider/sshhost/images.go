// BaseImage: hosts run what is installed on them (no provider.Images).

package sshhost

import "context"

// BaseImageID is what BaseImage returns: hosts run whatever they run.
const BaseImageID = "existing"

// BaseImage returns "existing": hosts run whatever is installed on them.
func (d *Driver) BaseImage(ctx context.Context, arch string) (string, error) {
	return BaseImageID, nil
}
