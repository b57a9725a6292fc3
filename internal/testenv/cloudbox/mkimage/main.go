// Command mkimage builds the cloudbox test image (the Debian rootfs the
// real cloud-init tier boots) into the cache, if it is not there yet. Run
// it as root with access to the Debian mirror, before tests run in a
// sealed network namespace: scripts/test-all does.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/crabbox/crabbox-go/internal/testenv/cloudbox"
)

func main() {
	start := time.Now()
	built := cloudbox.Built()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	img, err := cloudbox.EnsureImage(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
	if built {
		fmt.Printf("mkimage: %s (cached)\n", img)
		return
	}
	fmt.Printf("mkimage: built %s in %v\n", img, time.Since(start).Round(time.Second))
}
