// The package example.

package crabboxtest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/crabbox/crabbox-go/crabboxtest"
	"github.com/crabbox/crabbox-go/provider"
)

// A local cloud is a provider.Driver: hand it to crabbox.New in tests. Its
// hooks inject faults, here a machine type without capacity.
func Example() {
	cloud, err := crabboxtest.New()
	if err != nil {
		panic(err)
	}
	defer cloud.Close()

	types, _ := cloud.MachineTypes("small", "amd64")
	fmt.Println(cloud.Info().Name, cloud.Info().Region, types)

	cloud.SetCapacity(types[0], false)
	_, err = cloud.CreateMachine(context.Background(), provider.CreateMachineRequest{Type: types[0]})
	fmt.Println(errors.Is(err, provider.ErrCapacity))
	// Output:
	// local local-1 [local-small-a local-small-b]
	// true
}
