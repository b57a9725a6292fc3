// Package crabboxtest is an embedded local cloud for tests, demos and the
// driver conformance suite: a provider.Driver (with provider.Images,
// provider.Channels, provider.Protector, provider.Deprecator,
// provider.UsageFinder and provider.ChannelLister) whose
// machines are in-process SSH servers on 127.0.0.1.
//
// A machine boots from the cloud-init user-data crabbox renders
// (internal/cloudinit): its file system is a directory on the host,
// <dir>/machines/<id>/root (Cloud.MachineDir; the SDK never sees it), populated from the
// image it boots and then from the user-data's files, work root, home and
// bootstrap marker. Its SSH server presents the host key from the user-data
// and accepts only the user-data's user with the keys in its authorized_keys
// file on the box, read at every login as OpenSSH does (so an image's
// preparation, which removes the file, locks the source lease out). Commands
// run on the host with /bin/sh -c, in ROOT+WorkRoot, with
// CRABBOX_FS_ROOT=ROOT, HOME=ROOT/home/<user>,
// PATH=ROOT/usr/local/bin:$PATH and CRABBOX_VNC_PORT set to a loopback port
// of the box's own (every box shares the host's loopback, so the default
// 5900 would be shared too; a box booted while no port was free has none,
// and its VNC server takes 5900); like OpenSSH, a connection allows at
// most 10 concurrent sessions.
//
// Commands run as the test process's user on the host file system: a
// command that writes to an absolute path outside "$CRABBOX_FS_ROOT" writes
// to the host. Only run commands meant for the local cloud.
//
// Images copy a machine's file-system tree; channels are kept in memory.
// Hooks (FailNextImage, SetCapacity, KillMachine, ...) inject faults and
// inspect state. Everything a Cloud started ends with Close.
//
// # Files
//
// Every crabbox driver has the same files, and a subject lives in the file
// of its name (a driver lacking a subject lacks the file):
//
//	doc.go        this overview (package documentation only)
//	driver.go     Cloud, New, Start and their options, Close, Info
//	machines.go   machines: MachineTypes, CreateMachine, boot, power, GetMachine, ListMachines, DeleteMachine; capacity and kill hooks
//	images.go     images as file-system trees: BaseImage, CreateImage, GetImage, ListImages, DeleteImage; failure hook
//	channels.go   promotion channels, kept in memory
//	labels.go     label copies and label matching
//	sshd.go       the in-process SSH server of a machine: sessions, commands, signals
//	display.go    the virtual display of desktop and browser leases
//	fs.go         copying and writing machine file-system trees
//	partition.go  PartitionMachine: cutting a machine off the network
package crabboxtest
