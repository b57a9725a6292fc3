// Test environment on the hcloud fake, and the conformance suite.

package hetzner_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/testenv/hcloudfake"
	"github.com/crabbox/crabbox-go/provider"
	"github.com/crabbox/crabbox-go/provider/hetzner"
)

type env struct {
	fake   *hcloudfake.Fake
	client *hcloud.Client
	d      *hetzner.Driver

	mu   sync.Mutex
	hook func(*http.Request)
}

// fakeBefore sets (or clears, with nil) a hook run before the fake handles
// each request.
func (e *env) fakeBefore(h func(*http.Request)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hook = h
}

func newEnv(t *testing.T, fo hcloudfake.Options, retries int, opts ...hetzner.Option) *env {
	t.Helper()
	e := &env{}
	prev := fo.BeforeRequest
	fo.BeforeRequest = func(r *http.Request) {
		if prev != nil {
			prev(r)
		}
		e.mu.Lock()
		h := e.hook
		e.mu.Unlock()
		if h != nil {
			h(r)
		}
	}
	f := hcloudfake.New(fo)
	t.Cleanup(f.Close)
	c := hcloud.NewClient(
		hcloud.WithEndpoint(f.URL()),
		hcloud.WithToken("test"),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(time.Millisecond), MaxRetries: retries}),
	)
	d, err := hetzner.New(c, append([]hetzner.Option{hetzner.WithPollSchedule(fastPolls)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	e.fake, e.client, e.d = f, c, d
	return e
}

// fastPolls is the tests' wait schedule: a poll every millisecond.
func fastPolls(time.Duration) time.Duration { return time.Millisecond }

func authorizedKey(t testing.TB) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(sp)
}

func (e *env) baseImage(t *testing.T) string {
	t.Helper()
	img, err := e.d.BaseImage(context.Background(), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func (e *env) createReq(t *testing.T, token, typ string) provider.CreateMachineRequest {
	return provider.CreateMachineRequest{
		Token: token, Name: "brave-crab", Image: e.baseImage(t), Type: typ,
		UserData: []byte("#cloud-config\n"), Labels: map[string]string{"crabbox-lease": token},
		AuthorizedKey: authorizedKey(t),
	}
}

// waitRunning polls GetMachine like the SDK does.
func (e *env) waitRunning(t *testing.T, id string) *provider.Machine {
	t.Helper()
	for i := 0; i < 50; i++ {
		m, err := e.d.GetMachine(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if m.State == provider.MachineRunning {
			return m
		}
	}
	t.Fatalf("machine %s never became running", id)
	return nil
}

func mustID(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("id %q is not numeric", s)
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

func (e *env) runningMachine(t *testing.T, token string) *provider.Machine {
	t.Helper()
	m, err := e.d.CreateMachine(context.Background(), e.createReq(t, token, "cx22"))
	if err != nil {
		t.Fatal(err)
	}
	return e.waitRunning(t, m.ID)
}

func (e *env) waitImage(t *testing.T, id string) *provider.Image {
	t.Helper()
	for i := 0; i < 50; i++ {
		im, err := e.d.GetImage(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if im.State == provider.ImageAvailable {
			return im
		}
		if im.State != provider.ImagePending {
			t.Fatalf("image %s state %q", id, im.State)
		}
	}
	t.Fatalf("image %s never became available", id)
	return nil
}
