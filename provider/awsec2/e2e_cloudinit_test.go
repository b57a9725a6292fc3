// The runbook on moto with boxes booted by the real cloud-init.

package awsec2_test

import (
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/internal/testenv/cloudbox/cloudrunbook"
)

// The instances' user-data, as the driver sent it to moto, is read by
// Debian's cloud-init in a box of its own (internal/testenv/cloudbox):
// warm, bake, image, smoke a candidate booted from the image, promote,
// boot the promoted image, and leave moto clean.
func TestEndToEndRunbookOnRealCloudInit(t *testing.T) {
	e := newEnv(t)
	emu := awsbox.NewWith(t, e.ec2, awsbox.Options{RealCloudInit: true})
	c, err := crabbox.New(e.d,
		crabbox.WithDialer(emu.Dial),
		crabbox.WithStateDir(t.TempDir()),
		crabbox.WithOperator("tester"),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(100*time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(100*time.Millisecond)),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	img := cloudrunbook.Run(t, ctx, c)
	if err := e.d.ProtectImage(ctx, img, false); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	_ = e.d.DeleteChannel(ctx, crabbox.DefaultChannel)
	e.expectClean()
}
