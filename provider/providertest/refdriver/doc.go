// Package refdriver is the reference crabbox driver: a complete, in-memory
// implementation of every driver interface of package provider that a cloud
// backend can have, laid out in the file template every driver follows. A new
// provider starts by copying this package and replacing the in-memory
// backend (backend.go) with calls to its cloud's API.
//
// The files, one subject each:
//
//	doc.go       this overview
//	driver.go    Driver, New and its options (each returns an error), Info
//	errors.go    the mapping of raw backend errors to provider codes
//	machines.go  provider.Machines, MachineTypes
//	images.go    BaseImage, provider.Images, Protector, Deprecator, RegionCopier,
//	             UsageFinder
//	channels.go  provider.Channels, ChannelVersionMarker
//	orphans.go   provider.OrphanSweeper
//	labels.go    managed labels and name sanitizing
//	backend.go   the in-memory stand-in for a cloud API (not part of the
//	             template) and the hooks its tests use in place of the raw API
//
// The rules it shows: every call takes a context and returns its error
// unmapped when it is cancelled; every other error carries exactly one
// provider code, added once where the raw error is first seen; a retried
// CreateMachine or CreateImage with the same Token returns what the first
// call created; names and label values are sanitized with
// provider.SanitizeLabelValue; everything it creates carries
// provider.LabelManaged. It passes the conformance suite
// (providertest.Run) in full.
//
// It does not implement provider.AccessProvider: that interface is for
// drivers whose machines ignore user-data (existing SSH hosts, see
// provider/sshhost); a cloud driver's machines apply the rendered user-data.
//
// A Driver is safe for concurrent use. It never logs.
package refdriver
