// Package hetzner is the crabbox driver for Hetzner Cloud: servers as lease
// machines, snapshot images, promotion channels and cleanup, through the
// official hcloud-go client.
//
// The driver is built from an *hcloud.Client the caller configured (token,
// endpoint, poll and retry backoff):
//
//	client := hcloud.NewClient(hcloud.WithToken(os.Getenv("HCLOUD_TOKEN")))
//	d, err := hetzner.New(client, hetzner.WithLocations("fsn1", "nbg1", "hel1"))
//
// It implements provider.Driver, provider.Images, provider.Channels and
// provider.Protector. Hetzner cannot set a deprecation time on snapshots, so
// provider.Deprecator is not implemented and the SDK reports it unsupported.
//
// # Leases
//
// CreateMachine uploads the lease's public key as a labelled SSH key (so
// Hetzner does not mail a root password), then creates the server with the
// rendered user-data, the labels and a public IPv4 address. The request token
// is stored in the crabbox-token label of both: a retried create with the
// same token adopts the server instead of making a second one, and an
// ambiguous failure (5xx, timeout, cancelled call) is resolved by looking the
// server up by its token, at once and then for WithAdoptWait (default 10 s:
// the API may apply a request the client gave up on a moment later) before
// the lease key is deleted; an ambiguously failed key upload or create_image
// is resolved the same way. hcloud-go retries each request itself (its
// retry options), so the driver reports RetriesRequests and the crabbox
// client does not retry its calls on top (WithClientRetries(false) for a
// client without retries). Errors are classified by their Hetzner code,
// not their HTTP status (the API does not always answer with the status
// of its Errors table). Capacity errors (resource_unavailable,
// placement_error, ...) wrap provider.ErrCapacity: Hetzner runs out of
// stock per location ("try with a different location"), so with
// WithLocations the driver first tries the same server type in the next
// location, and only when every location refused does the SDK move to the
// next server type of the class. Project limits (resource_limit_exceeded,
// server_limit_exceeded, dedicated_core_limit) wrap provider.ErrQuota,
// never ErrCapacity: another type or location counts against the same
// limit, so neither the driver nor the SDK falls back on them.
// CreateMachine then waits for the create_server action and its next
// actions (for an adopted server, for whatever still runs on it) through
// hcloud-go's action waiting, with the driver's poll schedule
// (WithPollSchedule, PollSchedule by default) as a floor under the hcloud
// client's poll backoff, so a wait keeps a budget of requests (a 10-minute
// snapshot wait polls at most PollBudget10m times) whatever the client's
// poll options, and returns the server running with its address.
// If ctx ends during the wait, the half-made server is returned with the
// context's error so the SDK releases it; if an action fails, the driver
// deletes the server and its key itself and returns the hcloud.ActionError
// wrapped with a portable code (ErrUnavailable, or ErrCapacity for capacity
// codes, which with WithLocations first moves the create to the next
// location, with the lease key uploaded again). DeleteMachine deletes the server and the lease's key. Hetzner
// runs one action at a time on a server or image and answers other changes
// with 423 locked meanwhile (a release during a poweroff or a snapshot):
// DeleteMachine, DeleteImage and ProtectImage then wait for the running
// actions and try again, bounded by the context (hcloud-go does not retry
// locked, and the SDK never retries ErrConflict, so this is the one layer
// that does); a lock that outlasts the context ends with the context's
// error.
//
// # Images
//
// CreateImage runs the server's create_image action with type snapshot; the
// description is the image name and the labels are the ownership labels plus
// crabbox-token. An ambiguous failure is resolved by looking the snapshot up by
// its token label, adopting it (and deleting duplicates a retried request may
// have made) instead of failing or creating it twice. CreateImage waits for
// the create_image action the same way and returns the snapshot available;
// if ctx ends first, the pending snapshot is returned with the error; if the
// action fails, the snapshot comes back in state failed with the action's
// message as StateReason (GetImage looks that message up too). Sizes come
// from image_size (GB).
//
// # Channels
//
// Hetzner has no parameter store, and labels cannot be written
// conditionally. Channels are therefore kept as a chain of small SSH-key
// records, one per channel version, named "crabbox-channel-CHANNEL-vN" and
// labelled with the channel, version, image id, operator and time. Hetzner
// enforces unique SSH key names, which makes "create version N+1" an atomic
// compare-and-set: of two racing promotions from version N exactly one
// creates the record for N+1; the other gets uniqueness_error and SetChannel
// returns provider.ErrConflict (or, when unconditional, retries on top of the
// winner). The driver does not rely on name uniqueness alone: after creating
// its record it re-reads the version, and if a rival record of the same
// version exists the first created one (lowest id) wins and the later writer
// deletes its record and gets ErrConflict. The records hold freshly
// generated public keys whose private halves are discarded at once, so
// nobody can log in with them. Current = highest version; history = all
// records, oldest first (a rollback is a new version pointing at the older
// image). Everything is read back from Hetzner alone. DeleteChannel removes
// a channel's records and PruneChannel keeps only the newest ones.
//
// The channel is also mirrored onto image labels: after each SetChannel the
// current image carries "crabbox-channel-CHANNEL=current" and the image it
// displaced "crabbox-channel-CHANNEL=previous" (ChannelLabelKey; the image
// that was previous before loses the label), next to the known-good and
// status marks the SDK keeps in the crabbox-status labels. So the promoted
// image, the one before it and the known-good ones can be read from the
// images themselves, by label selector in the console or with
// ChannelImagesFromLabels, without crabbox's records.
//
// Both exist because neither does the other's job. Labels cannot be
// written conditionally (an update replaces the whole set, with no version
// check), so they cannot decide a race between two promotions, and they
// hold no history; the SSH-key records can, through the API's name
// uniqueness, and keep every version. The records are therefore the source
// of truth that CurrentChannel, ChannelHistory and conditional sets read;
// the labels follow them. A label writer re-checks the records after
// writing and starts over when the channel moved, so after racing
// promotions have returned the labels show the winner. A channel on a
// system image (which cannot carry labels) has records only. If writing the
// labels fails, SetChannel says so in its error and SyncChannelLabels
// rewrites them from the records.
//
// A lease key left behind by an interrupted release (server gone, key
// still there) is removed by DeleteOrphanKeys, once it is older than a grace
// period (WithOrphanGrace) so that the key of a lease being created at
// that moment, uploaded just before its server, is never taken.
//
// # Labels
//
// Hetzner label keys are an optional DNS prefix and "/" plus a name of at
// most 63 characters of [-_.a-zA-Z0-9] that begins and ends alphanumeric;
// values follow the name rule or are empty. Values are sanitized (invalid
// characters become "-", cut to 63, trimmed to alphanumeric ends); a key that
// breaks the rules, a reserved "hetzner.cloud/" key, or a non-empty value with
// nothing representable is rejected with provider.ErrInvalidArgument.
// WithLabelPrefix namespaces every label under a DNS prefix so several
// installations can share a project.
//
// # Files
//
// Every crabbox driver has the same files, and a subject lives in the file
// of its name (a driver lacking a subject lacks the file):
//
//	doc.go             this overview (package documentation only)
//	driver.go          Driver, New and its options, Info
//	errors.go          hcloud errors and action failures mapped to portable provider codes
//	machines.go        leases as servers: MachineTypes, CreateMachine, GetMachine, ListMachines, DeleteMachine, lease SSH keys
//	images.go          snapshots: BaseImage, CreateImage, GetImage, ListImages, DeleteImage, labels, protection
//	channels.go        promotion channels as chains of SSH-key records
//	channel_labels.go  the channel mirrored onto image labels (current, previous)
//	orphans.go         DeleteOrphanKeys and SweepOrphans: lease keys left without a server
//	labels.go          label keys the driver writes, key checks, value sanitizing, the label prefix, selectors
//	actions.go         waiting for Hetzner actions and settling servers and images after them
package hetzner
