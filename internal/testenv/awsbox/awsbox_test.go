package awsbox_test

import (
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"golang.org/x/crypto/ssh"

	"github.com/crabbox/crabbox-go/internal/cloudinit"
	"github.com/crabbox/crabbox-go/internal/testenv/awsbox"
	"github.com/crabbox/crabbox-go/internal/testenv/moto"
	"github.com/crabbox/crabbox-go/internal/testenv/sshd"
)

func TestBoxFromUserData(t *testing.T) {
	srv := moto.Start(t)
	c := ec2.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("a", "b", ""),
		HTTPClient:  &http.Client{},
		Retryer:     func() aws.Retryer { return aws.NopRetryer{} },
	}, func(o *ec2.Options) { o.BaseEndpoint = aws.String(srv.Endpoint) })
	ctx := t.Context()
	emu := awsbox.New(t, c)

	host, client := sshd.MustKey(t), sshd.MustKey(t)
	ud, err := cloudinit.Render(cloudinit.Config{
		LeaseID: "cbx_0123456789ab", User: "crabbox",
		AuthorizedKeys: []string{strings.TrimSpace(string(client.AuthorizedKey()))},
		HostKeyPEM:     host.PEM,
	})
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"099720109477"}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("no base image: %v", err)
	}
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: imgs.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceType: "t3.small", UserData: aws.String(base64.StdEncoding.EncodeToString(ud))})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(aws.ToString(out.Reservations[0].Instances[0].PublicIpAddress), "22")

	conn, err := emu.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	if ra := conn.RemoteAddr().(*net.TCPAddr); !ra.IP.IsLoopback() {
		t.Fatalf("dialled %v: not loopback", ra)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	sc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User: "crabbox", Auth: []ssh.AuthMethod{ssh.PublicKeys(client.Signer)},
		HostKeyCallback: ssh.FixedHostKey(host.PublicKey()),
	})
	if err != nil {
		t.Fatalf("ssh to the box with the user-data's host key: %v", err)
	}
	cl := ssh.NewClient(sc, chans, reqs)
	defer cl.Close()
	sess, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	b, err := sess.CombinedOutput(`whoami; echo "$CRABBOX_FS_ROOT"; echo "$HOME"; ` + cloudinit.ReadyShellCommand)
	if err != nil {
		t.Fatalf("ready check: %v: %s", err, b)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 4 || lines[0] != "crabbox" || lines[1] != emu.Root(id) || lines[2] != emu.Root(id)+"/home/crabbox" || lines[len(lines)-1] != "ready" {
		t.Errorf("box session = %q (root %s)", lines, emu.Root(id))
	}

	if err := emu.Kill(id); err != nil {
		t.Fatal(err)
	}
	if _, err := emu.Dial(ctx, "tcp", addr); !errors.Is(err, awsbox.ErrRefused) {
		t.Errorf("Dial after Kill = %v, want ErrRefused", err)
	}
	if _, err := emu.Dial(ctx, "tcp", "203.0.113.9:22"); !errors.Is(err, awsbox.ErrRefused) {
		t.Errorf("Dial(non-instance) = %v, want ErrRefused", err)
	}
}
