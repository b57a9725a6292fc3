// Package sshhost is a crabbox driver that leases existing SSH hosts.
//
// A "machine" is one host of a fixed pool allocated to a lease: CreateMachine
// picks a free host (ErrCapacity when none is free), DeleteMachine frees it.
// Nothing is booted, so user-data is ignored and there are no images or
// channels; the driver implements provider.AccessProvider instead, telling
// the SDK which user, key and host key to use for each host.
//
// The allocation state lives in memory by default. With WithStateFile it
// lives in a JSON file (written atomically, mode 0600, guarded by a lock file
// taken with flock), so that several processes share one pool and a process
// can re-attach to the leases another one created.
//
// # Files
//
// Every crabbox driver has the same files, and a subject lives in the file
// of its name (a driver lacking a subject lacks the file):
//
//	doc.go         this overview (package documentation only)
//	driver.go      Driver, Host, New and its options, Info
//	machines.go    leases as host allocations: MachineTypes, CreateMachine, GetMachine, ListMachines, DeleteMachine
//	images.go      BaseImage: hosts run what is installed on them (no provider.Images)
//	access.go      MachineAccess: the user, key and host key of an allocated host
//	state.go       the allocation state, in memory or in a JSON state file
//	lock_unix.go   the state file lock (flock)
//	lock_other.go  the state file lock where flock is missing (unsupported)
package sshhost
