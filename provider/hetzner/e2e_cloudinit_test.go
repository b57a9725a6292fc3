// The runbook on the hcloud fake with servers booted by the real cloud-init.

package hetzner_test

import (
	"testing"
	"time"

	crabbox "github.com/crabbox/crabbox-go"
	"github.com/crabbox/crabbox-go/internal/testenv/cloudbox/cloudrunbook"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake/sshbox"
)

// Each server's user-data, as the driver sent it to the fake, is read by
// Debian's cloud-init in a box of its own (internal/testenv/cloudbox):
// warm, bake, snapshot, smoke a candidate booted from the snapshot,
// promote, boot the promoted image, and leave no server or key behind.
func TestRunbookOnRealCloudInit(t *testing.T) {
	boxes := sshbox.NewWith(t, sshbox.Options{RealCloudInit: true})
	e := newEnv(t, boxes.Options(hcloudfake.Options{ImageSizeGB: 2}), 2)
	c, err := crabbox.New(e.d,
		crabbox.WithStateDir(t.TempDir()),
		crabbox.WithDialer(e.fake.Dial),
		crabbox.WithOperator("tester"),
		crabbox.WithPollBackoff(crabbox.ConstantBackoff(100*time.Millisecond)),
		crabbox.WithImagePollBackoff(crabbox.ConstantBackoff(100*time.Millisecond)),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 10*time.Minute)
	img := cloudrunbook.Run(t, ctx, c)
	if err := e.d.ProtectImage(ctx, img, false); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := e.d.DeleteChannel(ctx, crabbox.DefaultChannel); err != nil {
		t.Fatal(err)
	}
	// No server, no lease key, no channel record, no image left.
	if st := e.fake.State(); st.Servers != 0 || st.SSHKeys != 0 || st.Images != 0 {
		t.Errorf("the runbook left %+v", st)
	}
}
