// Package hcloudfake is a stateful fake of the subset of the Hetzner Cloud API
// that crabbox's Hetzner provider uses: servers, actions with progress, images
// (snapshots) with labels and label selectors, SSH keys, pagination, rate
// limits and the API's error shape. It speaks hcloud-go's wire types
// (hcloud/schema) over an httptest server, so the real hcloud-go client talks
// to it unchanged via hcloud.WithEndpoint(fake.URL()).
//
// Behaviour follows the documented API:
//   - errors are {"error":{"code","message","details"}} with the documented
//     HTTP status for each code (see below);
//   - asynchronous work is an action that is "running" with growing progress
//     and then "success" (or "error"); the fake advances an action one step
//     each time the action, or the resource it works on, is read, so clients
//     that poll see the same sequence of states as against the real API;
//     actions are read by id (GET /actions?id=, as hcloud-go's action
//     waiting does) or per resource (GET /servers/{id}/actions,
//     /images/{id}/actions, with a status filter); a failing action also
//     runs its steps before it ends in "error";
//   - a created server is "initializing" until its create_server action
//     finished, then "running"; a snapshot is "creating" until its
//     create_image action finished, then "available" with an image_size;
//   - lists are paginated (page, per_page default 25, max 50) with
//     meta.pagination, and filter with label_selector (k, !k, k=v, k==v,
//     k!=v, k in (a,b), k notin (a,b), joined by commas).
//
// Fault injection (InjectFault) makes chosen requests fail, before or after
// their effect (the "ambiguous" failure where the resource was created but the
// client saw an error). An optional Boot hook gives each fake server a real
// box (e.g. an OpenSSH sshd on loopback), reached through Dial: the fake's
// public addresses come from documentation ranges and are never dialled.
// Package sshbox provides such boxes, booted from the server's user-data.
//
// Behaviour raised to the documented API (issue 16), each citing the
// document it follows:
//   - HTTP statuses per error code follow the "Errors" table of the API
//     reference (https://docs.hetzner.cloud/#errors); see StatusForCode.
//     The real API is known to answer some codes with other statuses
//     (resource_unavailable with 412 on POST /servers was seen), so
//     clients must classify by code; Fault.Status injects such answers.
//   - 423 locked: "The item you are trying to access is locked (there is
//     already an Action running)" (Errors table; "Actions": a resource
//     runs one action at a time). A mutating request on a server (delete,
//     poweroff, shutdown, poweron, create_image) or an image
//     (change_protection, delete) is refused while another action on it
//     runs (a server's own create_server does not lock its deletion, and a
//     snapshot being created may be deleted, failing its action). Reading
//     the resource or its actions still advances them.
//   - Rate limiting per "Rate Limiting" (https://docs.hetzner.cloud/#rate-limiting):
//     a token bucket of Options.RateLimit requests (default 3600, the
//     documented hourly limit) refilled by one request every
//     Options.RateRefill (default 1 s, "one request per second is
//     refilled"); every response carries RateLimit-Limit,
//     RateLimit-Remaining and RateLimit-Reset (the UNIX time the bucket
//     is full again), and an empty bucket answers 429 rate_limit_exceeded
//     without any effect.
//   - Capacity per location (SetNoCapacity): POST /servers in a location
//     without capacity answers resource_unavailable naming the location
//     and asking to try a different one, as the API does when a location
//     is out of stock; without a location the fake places the server in
//     the first location that has capacity. SetLateNoCapacity emulates
//     the later form seen on the API: the create is accepted (201) and its
//     create_server action then fails with resource_unavailable.
//
// Known differences from the real API (the provider does not rely on them):
// a deleted server disappears at once (the delete_server action still runs
// to completion); servers go initializing -> running without "starting";
// only the endpoints listed in routes exist (no volumes, networks,
// firewalls, primary IPs: network ids give the server a private address in
// 10.0.0.0/8, firewall ids are accepted and ignored);
// server protection cannot be changed; actions end after a number of reads
// (Options.ActionSteps) unless Options.ActionDurations gives their command
// a time; the rate limit is one bucket for
// every token; an injected rate_limit_exceeded fault reports
// RateLimit-Remaining 0 without emptying the bucket.
package hcloudfake

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"
)

// ServerType describes a server type the fake offers.
type ServerType struct {
	Name         string
	Architecture string // "x86" or "arm"
	Cores        int
	MemoryGB     float32
	DiskGB       int
	CPUType      string // "shared" or "dedicated"
}

// defaultServerTypes is the catalogue used when Options.ServerTypes is nil.
// It is never modified; DefaultServerTypes hands out copies.
var defaultServerTypes = []ServerType{
	{"cx22", "x86", 2, 4, 40, "shared"},
	{"cx32", "x86", 4, 8, 80, "shared"},
	{"cx42", "x86", 8, 16, 160, "shared"},
	{"cx52", "x86", 16, 32, 320, "shared"},
	{"cpx11", "x86", 2, 2, 40, "shared"},
	{"cpx21", "x86", 3, 4, 80, "shared"},
	{"cpx31", "x86", 4, 8, 160, "shared"},
	{"cpx41", "x86", 8, 16, 240, "shared"},
	{"cpx51", "x86", 16, 32, 360, "shared"},
	{"ccx13", "x86", 2, 8, 80, "dedicated"},
	{"ccx23", "x86", 4, 16, 160, "dedicated"},
	{"ccx33", "x86", 8, 32, 240, "dedicated"},
	{"ccx43", "x86", 16, 64, 360, "dedicated"},
	{"ccx53", "x86", 32, 128, 600, "dedicated"},
	{"ccx63", "x86", 48, 192, 960, "dedicated"},
	{"cax11", "arm", 2, 4, 40, "shared"},
	{"cax21", "arm", 4, 8, 80, "shared"},
	{"cax31", "arm", 8, 16, 160, "shared"},
	{"cax41", "arm", 16, 32, 320, "shared"},
}

// BootRequest tells a Boot hook about a server that was just created.
type BootRequest struct {
	ID           int64
	Name         string
	UserData     string
	IPv4         string
	Labels       map[string]string
	ServerType   string
	Architecture string
	Image        int64
}

// Box is what a Boot hook starts for a server: something listening on
// loopback that Dial routes the server's public address to.
type Box interface {
	// Addr is the loopback host:port that Dial(serverIPv4:22) connects to.
	Addr() string
	// Close stops the box; it is called when the server is deleted or the
	// fake is closed.
	Close() error
}

// BootFunc starts a box for a new server. An error makes the server's
// create_server action fail (after its running steps, like any action) and
// leaves the server "off".
type BootFunc func(ctx context.Context, r BootRequest) (Box, error)

// Options configure a Fake. The zero value works.
type Options struct {
	// Token, when set, is required as "Authorization: Bearer TOKEN";
	// other requests get 401 unauthorized.
	Token string
	// ServerTypes offered; DefaultServerTypes when nil.
	ServerTypes []ServerType
	// Locations offered; fsn1, nbg1, hel1 when nil. The first is the default.
	Locations []string
	// ActionSteps is how many reads a running action takes to finish
	// (default 2: progress 0, 50, 100).
	ActionSteps int
	// ActionDurations makes the actions of the given commands (e.g.
	// "create_image") run for a time instead of a number of reads: such
	// an action is "running" until that long (by Now) after it started,
	// however often it is read, as on the API. Tests measuring how often
	// a client polls a long action use it.
	ActionDurations map[string]time.Duration
	// ImageSizeGB is the image_size of a finished snapshot (default 1.8).
	ImageSizeGB float32
	// Boot, if set, starts a box for every created server (see Box).
	Boot BootFunc
	// Snapshot, if set, is called when create_image made a new image from a
	// server, so a box layer can capture the server's disk; an error makes
	// the create_image action fail (after its running steps, with the
	// error's text in its message) and leaves the image "unavailable".
	Snapshot func(ctx context.Context, serverID, imageID int64) error
	// ImageDeleted, if set, is called after an image was deleted.
	ImageDeleted func(imageID int64)
	// BeforeRequest and AfterRequest, if set, are called for every API
	// request, outside the fake's lock: before it is handled, and after its
	// effect is applied but before the response is sent. Tests use them to
	// order concurrent requests deterministically.
	BeforeRequest func(r *http.Request)
	AfterRequest  func(r *http.Request, status int)
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// RateLimit is the size of the rate-limit token bucket and the
	// RateLimit-Limit header value (default 3600, Hetzner's documented
	// requests per hour). A negative value turns rate limiting off (the
	// headers then report 3600 remaining).
	RateLimit int
	// RateRefill is how long the bucket takes to regain one request
	// (default 1 s, as documented: the limit refills by one per second).
	RateRefill time.Duration
	// AllowDuplicateSSHKeyNames turns off the API's SSH key name
	// uniqueness (fingerprints stay unique), to test clients that must not
	// depend on it.
	AllowDuplicateSSHKeyNames bool
}

// Fault makes matching requests fail. See Fake.InjectFault.
type Fault struct {
	// Method matches the HTTP method; "" matches any.
	Method string
	// Path is a path.Match pattern for the request path, e.g. "/servers" or
	// "/servers/*/actions/create_image"; "" matches any.
	Path string
	// ServerType, when set, matches only POST /servers for that type.
	ServerType string
	// Code is the API error code returned, e.g. "resource_limit_exceeded".
	Code string
	// Status overrides the HTTP status; 0 uses the documented status of Code.
	Status int
	// Message is the error message; a generic one is used when empty.
	Message string
	// After performs the request's effect first and then answers with the
	// error (an ambiguous failure: e.g. the image was created).
	After bool
	// Times is how many matching requests fail (default 1).
	Times int
	// Every, when above 1, fails every Every-th matching request only (the
	// others are served as usual): Every 3 fails one request in three.
	Every int
	// Late, when positive, makes the rule a lag instead of an error: the
	// request (its body already read) is held Late and then applied and
	// answered as usual, even when the client gave up meanwhile (a create
	// the cloud applies after the client's cancellation). Code, Status,
	// Message and After are then unused.
	Late time.Duration
	// OnHold, if set, is called when a Late request is held, before its
	// effect, e.g. to cancel the client's context at that moment.
	OnHold func()

	seen int // matching requests, for Every
}

// Counts is a summary of the fake's state, for leak checks.
type Counts struct {
	Servers        int
	SSHKeys        int
	Images         int // snapshots and backups, not system images
	RunningActions int
	Boxes          int
}

// Fake is a running fake Hetzner Cloud API. Its methods are safe for
// concurrent use.
type Fake struct {
	opts Options
	srv  *httptest.Server

	mu         sync.Mutex
	nextID     map[string]int64
	servers    map[int64]*server
	images     map[int64]*image
	keys       map[int64]*schema.SSHKey
	actions    map[int64]*action
	faults     []*Fault
	types      map[string]ServerType
	ipCounter  int
	tokens     float64   // requests left in the rate-limit bucket
	refilled   time.Time // when tokens was last brought up to date
	requests   int
	noCapacity map[string]map[string]bool // location -> server type ("" = all) -> out of stock
	lateNoCap  map[string]bool            // location -> create_server actions fail with resource_unavailable
	closed     bool
	bootCtx    context.Context
	bootCancel context.CancelFunc
	late       sync.WaitGroup // Late requests not yet applied
	lateErrs   []string       // "METHOD path: code" of Late requests refused
}

// LateFailures lists the requests held by a Late fault that the fake then
// refused, as "METHOD path: code": a create refused because something it
// depended on (an SSH key) was deleted while it was in flight.
func (f *Fake) LateFailures() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lateErrs...)
}

// WaitLate waits until every request held by a Late fault was applied, so a
// test can check what the requests left behind.
func (f *Fake) WaitLate() { f.late.Wait() }

type server struct {
	s        schema.Server
	userData string
	create   *action
	box      Box
}

type image struct {
	s      schema.Image
	create *action
}

type action struct {
	s     schema.Action
	now   func() time.Time
	until time.Time // set: running until then (Options.ActionDurations), reads do not count
	steps int
	reads int
	fail  *schema.ActionError // set: the action ends in "error" with it
	done  func()              // applied under the lock when the action succeeds
	fails func()              // applied under the lock when the action fails
}

// New starts a fake. Close it when done.
func New(opts Options) *Fake {
	if opts.ServerTypes == nil {
		opts.ServerTypes = slices.Clone(defaultServerTypes)
	}
	if opts.Locations == nil {
		opts.Locations = []string{"fsn1", "nbg1", "hel1"}
	}
	if opts.ActionSteps <= 0 {
		opts.ActionSteps = 2
	}
	if opts.ImageSizeGB <= 0 {
		opts.ImageSizeGB = 1.8
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RateLimit == 0 {
		opts.RateLimit = 3600
	}
	if opts.RateRefill <= 0 {
		opts.RateRefill = time.Second
	}
	f := &Fake{
		opts:       opts,
		nextID:     map[string]int64{"server": 1000, "image": 100000, "ssh_key": 500, "action": 1, "ip": 0},
		servers:    map[int64]*server{},
		images:     map[int64]*image{},
		keys:       map[int64]*schema.SSHKey{},
		actions:    map[int64]*action{},
		types:      map[string]ServerType{},
		tokens:     float64(opts.RateLimit),
		refilled:   opts.Now(),
		noCapacity: map[string]map[string]bool{},
		lateNoCap:  map[string]bool{},
	}
	f.bootCtx, f.bootCancel = context.WithCancel(context.Background())
	for _, t := range opts.ServerTypes {
		f.types[t.Name] = t
	}
	// System images: Ubuntu 24.04 for both architectures, Debian 12 x86.
	created := time.Date(2024, 4, 25, 0, 0, 0, 0, time.UTC)
	for _, si := range []struct {
		id               int64
		name, arch, flav string
		ver              string
	}{
		{161547269, "ubuntu-24.04", "x86", "ubuntu", "24.04"},
		{161547270, "ubuntu-24.04", "arm", "ubuntu", "24.04"},
		{114690387, "debian-12", "x86", "debian", "12"},
	} {
		name, ver := si.name, si.ver
		f.images[si.id] = &image{s: schema.Image{
			ID: si.id, Status: "available", Type: "system", Name: &name,
			Description: "Ubuntu 24.04", DiskSize: 5, Created: &created,
			OSFlavor: si.flav, OSVersion: &ver, Architecture: si.arch,
			RapidDeploy: true, Labels: map[string]string{},
		}}
	}
	f.srv = httptest.NewServer(f.routes())
	return f
}

// URL is the API endpoint to pass to hcloud.WithEndpoint.
func (f *Fake) URL() string { return f.srv.URL }

// Close stops the HTTP server and every box.
func (f *Fake) Close() {
	f.srv.Close()
	f.bootCancel()
	f.mu.Lock()
	f.closed = true
	var boxes []Box
	for _, s := range f.servers {
		if s.box != nil {
			boxes = append(boxes, s.box)
			s.box = nil
		}
	}
	f.mu.Unlock()
	for _, b := range boxes {
		_ = b.Close()
	}
}

// InjectFault arms a fault; it fires on the next Times matching requests.
func (f *Fake) InjectFault(ft Fault) {
	if ft.Times <= 0 {
		ft.Times = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &ft)
}

// ClearFaults disarms every fault.
func (f *Fake) ClearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// PendingFaults returns how many armed faults have not fired yet.
func (f *Fake) PendingFaults() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, ft := range f.faults {
		n += ft.Times
	}
	return n
}

// State summarizes what the fake holds.
func (f *Fake) State() Counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := Counts{Servers: len(f.servers), SSHKeys: len(f.keys)}
	for _, im := range f.images {
		if im.s.Type != "system" {
			c.Images++
		}
	}
	for _, a := range f.actions {
		if a.s.Status == "running" {
			c.RunningActions++
		}
	}
	for _, s := range f.servers {
		if s.box != nil {
			c.Boxes++
		}
	}
	return c
}

// Requests returns how many API requests the fake answered.
func (f *Fake) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// Servers returns copies of all servers, by id.
func (f *Fake) Servers() []schema.Server {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]schema.Server, 0, len(f.servers))
	for _, s := range f.servers {
		out = append(out, copyServer(s.s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// UserData returns the user_data a server was created with.
func (f *Fake) UserData(id int64) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.servers[id]
	if !ok {
		return "", false
	}
	return s.userData, true
}

// Images returns copies of all snapshot and backup images, by id.
func (f *Fake) Images() []schema.Image {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []schema.Image{}
	for _, im := range f.images {
		if im.s.Type != "system" {
			out = append(out, copyImage(im.s))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SSHKeys returns copies of all SSH keys, by id.
func (f *Fake) SSHKeys() []schema.SSHKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []schema.SSHKey{}
	for _, k := range f.keys {
		c := *k
		c.Labels = copyLabels(k.Labels)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Dial connects to the box of the fake server whose public IPv4 (or
// private network address) is addr's host, on port 22. It never dials
// anything but a box's loopback address.
func (f *Fake) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("hcloudfake: dial %q: %w", addr, err)
	}
	if port != "22" {
		return nil, fmt.Errorf("hcloudfake: dial %s: fake servers listen on port 22 only", addr)
	}
	f.mu.Lock()
	var target string
	for _, s := range f.servers {
		if s.box == nil {
			continue
		}
		if s.s.PublicNet.IPv4.IP == host {
			target = s.box.Addr()
		}
		for _, pn := range s.s.PrivateNet {
			if pn.IP == host {
				target = s.box.Addr()
			}
		}
	}
	f.mu.Unlock()
	if target == "" {
		return nil, fmt.Errorf("hcloudfake: dial %s: no running fake server box at that address: %w", addr, errNoRoute)
	}
	th, _, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(th); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("hcloudfake: box address %s is not loopback; refusing to dial it", target)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, target)
}

var errNoRoute = errors.New("no route to host")

// ---- HTTP plumbing ----

// apiError is an error answered in the API's JSON shape.
type apiError struct {
	status  int
	code    string
	message string
	details any
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

// StatusForCode returns the HTTP status the API reference's "Errors"
// table (https://docs.hetzner.cloud/#errors) gives an error code; codes
// the table does not list (server-action codes such as placement_error,
// gateway codes) get the status hcloud-go and the API are seen to use, and
// anything else 500.
func StatusForCode(code string) int {
	switch code {
	// The Errors table.
	case "forbidden", "token_readonly", "resource_limit_exceeded", "resource_unavailable":
		return http.StatusForbidden
	case "unauthorized":
		return http.StatusUnauthorized
	case "invalid_input", "json_error":
		return http.StatusBadRequest
	case "locked", "protected":
		return http.StatusLocked
	case "not_found":
		return http.StatusNotFound
	case "rate_limit_exceeded":
		return http.StatusTooManyRequests
	case "server_error":
		return http.StatusInternalServerError
	case "service_error", "maintenance", "unavailable":
		return http.StatusServiceUnavailable
	case "uniqueness_error", "conflict":
		return http.StatusConflict
	case "unsupported_error":
		return http.StatusUnprocessableEntity
	case "deprecated_api_endpoint":
		return http.StatusGone
	// Not in the table.
	case "invalid_server_type", "server_not_stopped":
		return http.StatusUnprocessableEntity
	case "placement_error":
		return http.StatusPreconditionFailed
	case "timeout":
		return http.StatusGatewayTimeout
	case "bad_gateway":
		return http.StatusBadGateway
	default:
		return http.StatusInternalServerError
	}
}

func errf(code, format string, args ...any) *apiError {
	return &apiError{status: StatusForCode(code), code: code, message: fmt.Sprintf(format, args...)}
}

func invalidInput(field, msg string) *apiError {
	e := errf("invalid_input", "invalid input in field '%s'", field)
	e.details = map[string]any{"fields": []map[string]any{{"name": field, "messages": []string{msg}}}}
	return e
}

func notFound(kind string, id any) *apiError {
	return errf("not_found", "%s with ID '%v' not found", kind, id)
}

type handlerFunc func(r *http.Request, body []byte) (status int, resp any, err *apiError)

type route struct {
	method  string
	pattern string // path.Match pattern
	h       handlerFunc
}

func (f *Fake) routes() http.Handler {
	rs := []route{
		{"GET", "/actions", f.listActions},
		{"GET", "/actions/*", f.getAction},
		{"GET", "/servers/actions/*", f.getAction},
		{"GET", "/images/actions/*", f.getAction},
		{"GET", "/servers/*/actions", f.listResourceActions("server")},
		{"GET", "/images/*/actions", f.listResourceActions("image")},
		{"GET", "/servers", f.listServers},
		{"POST", "/servers", f.createServer},
		{"GET", "/servers/*", f.getServer},
		{"PUT", "/servers/*", f.updateServer},
		{"DELETE", "/servers/*", f.deleteServer},
		{"POST", "/servers/*/actions/create_image", f.createImage},
		{"POST", "/servers/*/actions/poweroff", f.serverPower("poweroff", "off")},
		{"POST", "/servers/*/actions/shutdown", f.serverPower("shutdown_server", "off")},
		{"POST", "/servers/*/actions/poweron", f.serverPower("start_server", "running")},
		{"GET", "/images", f.listImages},
		{"GET", "/images/*", f.getImage},
		{"PUT", "/images/*", f.updateImage},
		{"DELETE", "/images/*", f.deleteImage},
		{"POST", "/images/*/actions/change_protection", f.imageProtection},
		{"GET", "/ssh_keys", f.listKeys},
		{"POST", "/ssh_keys", f.createKey},
		{"GET", "/ssh_keys/*", f.getKey},
		{"PUT", "/ssh_keys/*", f.updateKey},
		{"DELETE", "/ssh_keys/*", f.deleteKey},
		{"GET", "/server_types", f.listServerTypes},
		{"GET", "/locations", f.listLocations},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.opts.BeforeRequest != nil {
			f.opts.BeforeRequest(r)
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		status, resp, aerr := f.serve(rs, r, body)
		if f.opts.AfterRequest != nil {
			f.opts.AfterRequest(r, status)
		}
		f.writeResponse(w, status, resp, aerr)
	})
}

func (f *Fake) serve(rs []route, r *http.Request, body []byte) (int, any, *apiError) {
	f.mu.Lock()
	f.requests++
	allowed := f.takeToken()
	f.mu.Unlock()
	if !allowed {
		e := errf("rate_limit_exceeded", "limit of %d requests reached, one more is allowed every %v", f.opts.RateLimit, f.opts.RateRefill)
		return e.status, nil, e
	}
	if f.opts.Token != "" && r.Header.Get("Authorization") != "Bearer "+f.opts.Token {
		e := errf("unauthorized", "unable to authenticate")
		return e.status, nil, e
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	var h handlerFunc
	methodSeen := false
	for _, rt := range rs {
		if ok, _ := path.Match(rt.pattern, p); ok {
			methodSeen = true
			if rt.method == r.Method {
				h = rt.h
				break
			}
		}
	}
	if h == nil {
		if methodSeen {
			e := &apiError{status: http.StatusMethodNotAllowed, code: "method_not_allowed", message: "method not allowed"}
			return e.status, nil, e
		}
		e := errf("not_found", "path %s not found", p)
		return e.status, nil, e
	}
	ft := f.takeFault(r, p, body)
	if ft != nil && ft.Late > 0 {
		f.late.Add(1)
		defer f.late.Done()
		if ft.OnHold != nil {
			ft.OnHold()
		}
		time.Sleep(ft.Late)
		status, resp, aerr := h(r, body)
		if aerr != nil {
			f.mu.Lock()
			f.lateErrs = append(f.lateErrs, r.Method+" "+p+": "+aerr.code)
			f.mu.Unlock()
			return aerr.status, nil, aerr
		}
		return status, resp, nil
	}
	if ft != nil && !ft.After {
		e := faultError(ft)
		return e.status, nil, e
	}
	status, resp, aerr := h(r, body)
	if ft != nil && aerr == nil {
		e := faultError(ft)
		return e.status, nil, e
	}
	if aerr != nil {
		return aerr.status, nil, aerr
	}
	return status, resp, nil
}

func faultError(ft *Fault) *apiError {
	st := ft.Status
	if st == 0 {
		st = StatusForCode(ft.Code)
	}
	msg := ft.Message
	if msg == "" {
		msg = "injected fault: " + ft.Code
	}
	return &apiError{status: st, code: ft.Code, message: msg}
}

func (f *Fake) takeFault(r *http.Request, p string, body []byte) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, ft := range f.faults {
		if ft.Method != "" && ft.Method != r.Method {
			continue
		}
		if ft.Path != "" {
			if ok, _ := path.Match(ft.Path, p); !ok {
				continue
			}
		}
		if ft.ServerType != "" {
			if r.Method != "POST" || p != "/servers" {
				continue
			}
			var req schema.ServerCreateRequest
			if json.Unmarshal(body, &req) != nil || req.ServerType.Name != ft.ServerType {
				continue
			}
		}
		if ft.Every > 1 {
			if ft.seen++; ft.seen%ft.Every != 0 {
				continue
			}
		}
		ft.Times--
		if ft.Times <= 0 {
			f.faults = append(f.faults[:i], f.faults[i+1:]...)
		}
		c := *ft
		return &c
	}
	return nil
}

// refill brings the rate-limit bucket up to date (lock held): one request
// back every RateRefill, up to RateLimit.
func (f *Fake) refill() {
	now := f.opts.Now()
	if d := now.Sub(f.refilled); d > 0 {
		f.tokens = min(float64(f.opts.RateLimit), f.tokens+float64(d)/float64(f.opts.RateRefill))
	}
	f.refilled = now
}

// takeToken takes one request from the rate-limit bucket (lock held); false
// when it is empty. Rate limiting off always allows.
func (f *Fake) takeToken() bool {
	if f.opts.RateLimit < 0 {
		return true
	}
	f.refill()
	if f.tokens < 1 {
		return false
	}
	f.tokens--
	return true
}

// rateHeaders returns the RateLimit-* header values (lock held): the
// limit, the requests left and when the bucket is full again.
func (f *Fake) rateHeaders(limited bool) (limit, remaining int, reset int64) {
	if f.opts.RateLimit < 0 {
		return 3600, 3600, f.opts.Now().Unix()
	}
	f.refill()
	remaining = int(f.tokens)
	if limited {
		remaining = 0
	}
	missing := float64(f.opts.RateLimit) - f.tokens
	full := f.opts.Now().Add(time.Duration(missing * float64(f.opts.RateRefill)))
	return f.opts.RateLimit, remaining, full.Unix()
}

// RateRemaining returns how many requests the rate-limit bucket holds now.
func (f *Fake) RateRemaining() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, rem, _ := f.rateHeaders(false)
	return rem
}

func (f *Fake) writeResponse(w http.ResponseWriter, status int, resp any, aerr *apiError) {
	f.mu.Lock()
	limit, rem, reset := f.rateHeaders(aerr != nil && aerr.code == "rate_limit_exceeded")
	f.mu.Unlock()
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(rem))
	h.Set("RateLimit-Reset", strconv.FormatInt(reset, 10))
	h.Set("X-Correlation-Id", "hcloudfake")
	if aerr != nil {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(aerr.status)
		details := aerr.details
		if details == nil {
			details = map[string]any{}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"code": aerr.code, "message": aerr.message, "details": details,
		}})
		return
	}
	if resp == nil {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Type", "application/json")
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(resp); err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// decode parses a JSON request body into v, answering json_error on failure.
func decode(body []byte, v any) *apiError {
	if err := json.Unmarshal(body, v); err != nil {
		return errf("json_error", "invalid JSON: %v", err)
	}
	return nil
}

func pathID(r *http.Request, idx int) (int64, *apiError) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if idx >= len(parts) {
		return 0, errf("invalid_input", "missing id")
	}
	id, err := strconv.ParseInt(parts[idx], 10, 64)
	if err != nil || id <= 0 {
		return 0, invalidInput("id", "must be a positive integer")
	}
	return id, nil
}

// pagination is meta.pagination with nulls where the API sends null.
type pagination struct {
	Page         int  `json:"page"`
	PerPage      int  `json:"per_page"`
	PreviousPage *int `json:"previous_page"`
	NextPage     *int `json:"next_page"`
	LastPage     *int `json:"last_page"`
	TotalEntries *int `json:"total_entries"`
}

type listResponse map[string]any

// paginate slices items per the request's page/per_page and builds the
// response {key: items, meta: {pagination}}.
func paginate[T any](r *http.Request, key string, items []T) (listResponse, *apiError) {
	q := r.URL.Query()
	page, perPage := 1, 25
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, invalidInput("page", "must be a positive integer")
		}
		page = n
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, invalidInput("per_page", "must be a positive integer")
		}
		perPage = min(n, 50)
	}
	total := len(items)
	last := max(1, (total+perPage-1)/perPage)
	start := min((page-1)*perPage, total)
	end := min(start+perPage, total)
	pg := pagination{Page: page, PerPage: perPage, LastPage: &last, TotalEntries: &total}
	if page > 1 {
		p := page - 1
		pg.PreviousPage = &p
	}
	if page < last {
		n := page + 1
		pg.NextPage = &n
	}
	out := make([]T, end-start)
	copy(out, items[start:end])
	return listResponse{key: out, "meta": map[string]any{"pagination": pg}}, nil
}

func (f *Fake) newID(kind string) int64 {
	f.nextID[kind]++
	return f.nextID[kind]
}

func (f *Fake) now() time.Time { return f.opts.Now().UTC().Truncate(time.Second) }

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func copyServer(s schema.Server) schema.Server {
	s.Labels = copyLabels(s.Labels)
	if s.Image != nil {
		im := copyImage(*s.Image)
		s.Image = &im
	}
	return s
}

func copyImage(s schema.Image) schema.Image {
	s.Labels = copyLabels(s.Labels)
	return s
}
