// Real cloud-init's schema check of every document Render writes: the
// cloud-init of the cloudbox test image (Debian bookworm) validates the
// user-data of every lease kind.

package cloudinit_test

import (
	"context"
	"testing"
	"time"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/cloudbox"
)

func TestRealCloudInitSchema(t *testing.T) {
	img := cloudbox.Require(t) // fails when CI=true and the tier is missing
	for _, kind := range cloudbox.Kinds() {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			l, err := cloudbox.NewLease(kind)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := cloudinit.Render(l.Config)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := cloudbox.Schema(ctx, img, doc)
			if err != nil {
				t.Fatalf("%v\ndocument:\n%s", err, doc)
			}
			t.Logf("cloud-init schema: %s", out)
		})
	}
}

// TestRealCloudInitSchemaRejects proves the check can fail: cloud-init's
// schema refuses what the renderer used to write (ssh_genkeytypes: []).
func TestRealCloudInitSchemaRejects(t *testing.T) {
	img := cloudbox.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := cloudbox.Schema(ctx, img, []byte("#cloud-config\nssh_genkeytypes: []\n"))
	if err == nil {
		t.Fatalf("cloud-init schema accepted ssh_genkeytypes: []:\n%s", out)
	}
	t.Logf("rejected as expected: %v", err)
}
