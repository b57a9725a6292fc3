// Leases as servers: MachineTypes, CreateMachine, GetMachine, ListMachines, DeleteMachine, lease SSH keys.

package hetzner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/crabbox/crabbox-go/provider"
)

// maxUserData is Hetzner's user_data limit.
const maxUserData = 32 * 1024

var nonHost = regexp.MustCompile(`[^a-z0-9-]+`)

// serverName maps a friendly name to a valid server name (RFC 1123 label,
// at most 63 characters).
func serverName(name, token string) string {
	n := hostPart(name)
	if n == "" {
		n = "crabbox-" + hostPart(token)
	}
	if len(n) > 63 {
		n = strings.TrimRight(n[:63], "-")
	}
	return n
}

// hostPart is s lower-cased with every run of characters a host name
// cannot hold replaced by "-", without leading or trailing "-".
func hostPart(s string) string {
	return strings.Trim(nonHost.ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// CreateMachine uploads the lease key, creates the server and waits for its
// create actions through hcloud-go's action waiting (the poll backoff of the
// hcloud client), then returns it running with its address. See the package
// documentation for idempotency, fallback and what happens when the wait
// ends early or an action fails.
func (d *Driver) CreateMachine(ctx context.Context, req provider.CreateMachineRequest) (*provider.Machine, error) {
	if req.Type == "" || req.Image == "" {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: create machine: type and image are required")
	}
	if len(req.UserData) > maxUserData {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: user-data is %d bytes, Hetzner accepts at most %d", len(req.UserData), maxUserData)
	}
	labels, token, err := d.ownedLabels(req.Labels, req.Token)
	if err != nil {
		return nil, err
	}
	if token != "" {
		// A retried create with the same token adopts the first one's server.
		if s, err := d.findServerByToken(ctx, token); err != nil {
			return nil, err
		} else if s != nil {
			return d.settleServer(ctx, s, nil, nil)
		}
	}
	sc := &serverCreate{d: d, req: req, token: token}
	keys, err := sc.leaseKeys(ctx)
	if err != nil {
		return nil, err
	}
	locations := d.o.locations
	if len(locations) == 0 {
		locations = []string{""} // Hetzner chooses
	}
	var full []string // locations that answered with a capacity error
	for i, loc := range locations {
		sc.opts = d.serverCreateOpts(req, keys, labels, loc)
		res, adopted, err := sc.create(ctx)
		switch {
		case adopted != nil:
			return d.settleServer(ctx, adopted, nil, sc.ownKey)
		case err != nil && classify(err) == provider.ErrCapacity:
			full = append(full, loc)
			if i == len(locations)-1 {
				return sc.createFailed(ctx, fmt.Errorf("no capacity for %s in %s: %w", req.Type, strings.Join(full, ", "), err))
			}
			// A capacity answer is definite, but a request hcloud-go
			// retried may have landed before it: look once.
			if sc.token != "" {
				if s, ferr := d.findServerByToken(ctx, sc.token); ferr == nil && s != nil {
					return d.settleServer(ctx, s, nil, sc.ownKey)
				}
			}
			continue
		case err != nil:
			return sc.createFailed(ctx, err)
		}
		m, err := d.settleServer(ctx, res.Server, append([]*hcloud.Action{res.Action}, res.NextActions...), sc.ownKey)
		if m != nil || !errors.Is(err, provider.ErrCapacity) || i == len(locations)-1 || ctx.Err() != nil {
			return m, err
		}
		// The create was accepted but its create_server action failed
		// for capacity (seen on the API): settleServer deleted the
		// server and the lease key; upload the key again and try the
		// next location.
		full = append(full, loc)
		if keys, err = sc.leaseKeys(ctx); err != nil {
			return nil, err
		}
	}
	return nil, provider.Errorf(provider.ErrCapacity, "hetzner: create server: no location") // not reached
}

// serverCreate is the state of one CreateMachine call once its request is
// checked: the lease key it owns and the server it asks for.
type serverCreate struct {
	d      *Driver
	req    provider.CreateMachineRequest
	token  string         // the request's token as a label value ("" for none)
	ownKey *hcloud.SSHKey // the lease key this lease owns (deleted with it), nil if none
	opts   hcloud.ServerCreateOpts
}

// leaseKeys uploads req.AuthorizedKey, if any, and returns the server's
// SSH keys, recording in sc.ownKey whether the key is the lease's own.
func (sc *serverCreate) leaseKeys(ctx context.Context) ([]*hcloud.SSHKey, error) {
	if len(sc.req.AuthorizedKey) == 0 {
		return nil, nil
	}
	k, own, err := sc.d.leaseKey(ctx, sc.token, sc.req.Name, sc.req.AuthorizedKey)
	if err != nil {
		return nil, err
	}
	if own {
		sc.ownKey = k
	}
	return []*hcloud.SSHKey{k}, nil
}

// dropKey deletes the lease's own key, if any, on a detached context.
func (sc *serverCreate) dropKey(ctx context.Context) {
	if sc.ownKey == nil {
		return
	}
	cctx, cancel := sc.d.detached(ctx)
	defer cancel()
	_, _ = sc.d.c.SSHKey.Delete(cctx, sc.ownKey)
}

// serverCreateOpts is the server req asks for, with the SSH keys keys and
// the labels labels, in location (none: Hetzner chooses) with the
// configured networks and firewalls.
func (d *Driver) serverCreateOpts(req provider.CreateMachineRequest, keys []*hcloud.SSHKey, labels map[string]string, location string) hcloud.ServerCreateOpts {
	opts := hcloud.ServerCreateOpts{
		Name:       serverName(req.Name, req.Token),
		ServerType: &hcloud.ServerType{Name: req.Type},
		Image:      imageRef(req.Image),
		SSHKeys:    keys,
		UserData:   string(req.UserData),
		Labels:     labels,
		PublicNet:  &hcloud.ServerCreatePublicNet{EnableIPv4: !d.o.privateSSH, EnableIPv6: d.o.ipv6},
	}
	if location != "" {
		opts.Location = &hcloud.Location{Name: location}
	}
	for _, id := range d.o.networks {
		opts.Networks = append(opts.Networks, &hcloud.Network{ID: id})
	}
	for _, id := range d.o.firewalls {
		opts.Firewalls = append(opts.Firewalls, &hcloud.ServerCreateFirewall{Firewall: hcloud.Firewall{ID: id}})
	}
	return opts
}

// create creates the server sc.opts describes. When its name is taken,
// adopted is the server of an earlier attempt with the token, if there is
// one; otherwise the create is retried once under the name with a token
// suffix.
func (sc *serverCreate) create(ctx context.Context) (res hcloud.ServerCreateResult, adopted *hcloud.Server, err error) {
	res, _, err = sc.d.c.Server.Create(ctx, sc.opts)
	if err == nil || !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		return res, nil, err
	}
	// The name is taken: by our own earlier attempt (adopt it) or by
	// someone else's server (retry with a token suffix).
	if sc.token != "" {
		if s, ferr := sc.d.findServerByToken(ctx, sc.token); ferr == nil && s != nil {
			return res, s, nil
		}
	}
	if name, ok := suffixedName(sc.opts.Name, sc.req.Token); ok {
		sc.opts.Name = name
		res, _, err = sc.d.c.Server.Create(ctx, sc.opts)
	}
	return res, nil, err
}

// suffixedName is name with the host-name form of token appended, cut to 63
// characters; ok is false when token has no such form.
func suffixedName(name, token string) (_ string, ok bool) {
	suffix := hostPart(token)
	if suffix == "" {
		return "", false
	}
	base := name
	if len(base)+1+len(suffix) > 63 {
		base = strings.TrimRight(base[:max(0, 63-1-len(suffix))], "-")
	}
	return strings.TrimLeft(base+"-"+suffix, "-"), true
}

// createFailed handles the error err of the server create.
func (sc *serverCreate) createFailed(ctx context.Context, err error) (*provider.Machine, error) {
	merr := mapErr("create server", err)
	// Any failure may hide a created server (hcloud-go retries some
	// errors itself); the token decides.
	// When the failure is ambiguous the server may still land (the API
	// applies a request the client gave up on a moment later): keep
	// looking for the adopt wait, and only then delete the key it needs.
	if sc.token != "" {
		find := func(ctx context.Context) (*hcloud.Server, bool) {
			s, ferr := sc.d.findServerByToken(ctx, sc.token)
			return s, ferr == nil && s != nil
		}
		cctx, cancel := sc.d.detached(ctx)
		s, found := find(cctx)
		cancel()
		if !found && ambiguous(merr) {
			s, found = adopt(ctx, sc.d, find)
		}
		if found {
			if ctx.Err() != nil {
				// The caller gave up: hand the server back with the
				// error so it can be deleted.
				return sc.d.machine(s), merr
			}
			return sc.d.settleServer(ctx, s, nil, sc.ownKey)
		}
	}
	sc.dropKey(ctx)
	return nil, merr
}

func imageRef(image string) *hcloud.Image {
	if id, err := strconv.ParseInt(image, 10, 64); err == nil {
		return &hcloud.Image{ID: id}
	}
	return &hcloud.Image{Name: image}
}

// leaseKey uploads the lease's public key with the lease token. own reports
// whether the returned key belongs to this lease (and is deleted with it); a
// key already registered by someone else is used but left alone.
func (d *Driver) leaseKey(ctx context.Context, token, name string, authorized []byte) (key *hcloud.SSHKey, own bool, err error) {
	pub := strings.TrimSpace(string(authorized))
	keyName := "crabbox-" + token
	if token == "" {
		keyName = "crabbox-" + serverName(name, "") + "-" + strconv.FormatInt(d.o.now().UnixNano(), 36)
	}
	labels := map[string]string{d.rk(labelManaged): "true", d.rk(labelCreatedBy): provider.CreatedByValue, d.rk(LabelKind): kindLeaseKey}
	if token != "" {
		labels[d.rk(LabelToken)] = token
	}
	k, _, err := d.c.SSHKey.Create(ctx, hcloud.SSHKeyCreateOpts{Name: keyName, PublicKey: pub, Labels: labels})
	if err == nil {
		return k, true, nil
	}
	merr := mapErr("create ssh key", err)
	taken := hcloud.IsError(err, hcloud.ErrorCodeUniquenessError)
	if !taken && !ambiguous(merr) {
		return nil, false, merr
	}
	// Same name (an earlier attempt of this lease, or this attempt's
	// create whose answer was lost) or same fingerprint (the key is already
	// registered): use the existing key.
	lctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		lctx, cancel = d.detached(ctx)
		defer cancel()
	}
	ex, _, gerr := d.c.SSHKey.GetByName(lctx, keyName)
	if gerr == nil && ex == nil && taken {
		if fp, ferr := fingerprint(pub); ferr == nil {
			ex, _, gerr = d.c.SSHKey.GetByFingerprint(lctx, fp)
		}
	}
	if gerr != nil || ex == nil {
		if !taken && token != "" {
			// The upload may still land: wait for it and take it back.
			d.dropLateKey(ctx, keyName, token)
		}
		return nil, false, merr
	}
	own = token != "" && ex.Labels[d.rk(LabelToken)] == token
	if ctx.Err() != nil {
		// The caller gave up before the server exists: take our key back.
		if own {
			_, _ = d.c.SSHKey.Delete(lctx, ex)
		}
		return nil, false, merr
	}
	return ex, own, nil
}

// dropLateKey deletes the lease key keyName uploaded with token by a
// request that failed ambiguously, once it exists, for up to the adopt wait.
func (d *Driver) dropLateKey(ctx context.Context, keyName, token string) {
	k, ok := adopt(ctx, d, func(ctx context.Context) (*hcloud.SSHKey, bool) {
		k, _, err := d.c.SSHKey.GetByName(ctx, keyName)
		return k, err == nil && k != nil
	})
	if ok && k.Labels[d.rk(LabelToken)] == token {
		cctx, cancel := d.detached(ctx)
		defer cancel()
		_, _ = d.c.SSHKey.Delete(cctx, k)
	}
}

func (d *Driver) findServerByToken(ctx context.Context, token string) (*hcloud.Server, error) {
	servers, err := d.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: d.rk(LabelToken) + "=" + token}})
	if err != nil {
		return nil, mapErr("find server by token", err)
	}
	for _, s := range servers {
		if s.Status != hcloud.ServerStatusDeleting {
			return s, nil
		}
	}
	return nil, nil
}

// GetMachine returns the server; ErrNotFound when it does not exist or is
// being deleted.
func (d *Driver) GetMachine(ctx context.Context, id string) (*provider.Machine, error) {
	s, err := d.getServer(ctx, id)
	if err != nil {
		return nil, err
	}
	return d.machine(s), nil
}

func (d *Driver) getServer(ctx context.Context, id string) (*hcloud.Server, error) {
	n, err := parseID("server", id)
	if err != nil {
		return nil, err
	}
	s, _, err := d.c.Server.GetByID(ctx, n)
	if err != nil {
		return nil, mapErr("get server", err)
	}
	if s == nil || s.Status == hcloud.ServerStatusDeleting {
		return nil, provider.Errorf(provider.ErrNotFound, "hetzner: server %s not found", id)
	}
	return s, nil
}

// ListMachines returns live servers having all the labels.
func (d *Driver) ListMachines(ctx context.Context, labels map[string]string) ([]*provider.Machine, error) {
	sel, err := d.selector(labels)
	if err != nil {
		return nil, err
	}
	servers, err := d.c.Server.AllWithOpts(ctx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: sel}})
	if err != nil {
		return nil, mapErr("list servers", err)
	}
	out := make([]*provider.Machine, 0, len(servers))
	for _, s := range servers {
		if s.Status == hcloud.ServerStatusDeleting {
			continue
		}
		out = append(out, d.machine(s))
	}
	return out, nil
}

// DeleteMachine deletes the server and the lease's SSH key. A server that is
// already gone is not an error.
func (d *Driver) DeleteMachine(ctx context.Context, id string) error {
	n, err := parseID("server", id)
	if err != nil {
		return nil // nothing by that id can exist
	}
	s, _, err := d.c.Server.GetByID(ctx, n)
	if err != nil {
		return mapErr("get server", err)
	}
	if s == nil {
		return nil
	}
	if s.Status != hcloud.ServerStatusDeleting {
		if err := d.deleteServer(ctx, s.ID, "delete server"); err != nil {
			return err
		}
	}
	if tok := s.Labels[d.rk(LabelToken)]; tok != "" {
		return d.deleteLeaseKeys(ctx, tok)
	}
	return nil
}

// deleteServer deletes server id, waiting out a running action that locks
// it (see unlocked); a server already gone is not an error.
func (d *Driver) deleteServer(ctx context.Context, id int64, what string) error {
	err := d.unlocked(ctx, "server", id, what, func(ctx context.Context) error {
		_, _, err := d.c.Server.DeleteWithResult(ctx, &hcloud.Server{ID: id})
		return err
	})
	if err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		return mapErr(what, err)
	}
	return nil
}

func (d *Driver) deleteLeaseKeys(ctx context.Context, token string) error {
	keys, err := d.c.SSHKey.AllWithOpts(ctx, hcloud.SSHKeyListOpts{ListOpts: hcloud.ListOpts{
		LabelSelector: d.rk(LabelKind) + "=" + kindLeaseKey + "," + d.rk(LabelToken) + "=" + token}})
	if err != nil {
		return mapErr("list lease keys", err)
	}
	var errs []error
	for _, k := range keys {
		if _, err := d.c.SSHKey.Delete(ctx, k); err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
			errs = append(errs, mapErr("delete ssh key", err))
		}
	}
	return errors.Join(errs...)
}

// UpdateMachineLabels merges labels into the server's labels; an empty
// value removes a label.
func (d *Driver) UpdateMachineLabels(ctx context.Context, id string, labels map[string]string) error {
	upd, err := d.toLabels(labels)
	if err != nil {
		return err
	}
	s, err := d.getServer(ctx, id)
	if err != nil {
		return err
	}
	if _, _, err := d.c.Server.Update(ctx, s, hcloud.ServerUpdateOpts{Labels: mergeLabels(s.Labels, upd)}); err != nil {
		return mapErr("update server labels", err)
	}
	return nil
}

func (d *Driver) machine(s *hcloud.Server) *provider.Machine {
	m := &provider.Machine{
		ID:      strconv.FormatInt(s.ID, 10),
		Name:    s.Name,
		State:   machineState(s.Status),
		Labels:  d.fromLabels(s.Labels),
		Created: s.Created,
	}
	if s.ServerType != nil {
		m.Type = s.ServerType.Name
	}
	if s.Image != nil && s.Image.ID != 0 {
		m.Image = strconv.FormatInt(s.Image.ID, 10)
	}
	var ip net.IP
	if d.o.privateSSH {
		if len(s.PrivateNet) > 0 {
			ip = s.PrivateNet[0].IP
		}
	} else if !s.PublicNet.IPv4.IsUnspecified() {
		ip = s.PublicNet.IPv4.IP
	}
	if len(ip) > 0 && !ip.IsUnspecified() {
		m.SSHAddr = net.JoinHostPort(ip.String(), strconv.Itoa(d.o.sshPort))
	}
	return m
}

func machineState(s hcloud.ServerStatus) provider.MachineState {
	switch s {
	case hcloud.ServerStatusInitializing, hcloud.ServerStatusStarting, hcloud.ServerStatusMigrating, hcloud.ServerStatusRebuilding:
		return provider.MachinePending
	case hcloud.ServerStatusRunning:
		return provider.MachineRunning
	case hcloud.ServerStatusStopping:
		return provider.MachineStopping
	case hcloud.ServerStatusOff:
		return provider.MachineStopped
	case hcloud.ServerStatusDeleting:
		return provider.MachineTerminated
	}
	return provider.MachineUnknown
}

// defaultServerTypes maps lease classes to server type fallback lists per
// architecture ("amd64", "arm64"). It is never modified; DefaultServerTypes
// hands out copies.
var defaultServerTypes = map[string]map[string][]string{
	provider.ClassTiny:     {provider.ArchAMD64: {"cx22", "cpx11"}, provider.ArchARM64: {"cax11"}},
	provider.ClassSmall:    {provider.ArchAMD64: {"cx32", "cpx21", "cx22"}, provider.ArchARM64: {"cax21", "cax11"}},
	provider.ClassStandard: {provider.ArchAMD64: {"cx42", "cpx31", "cx32"}, provider.ArchARM64: {"cax31", "cax21"}},
	provider.ClassFast:     {provider.ArchAMD64: {"ccx23", "cpx41", "cx42"}, provider.ArchARM64: {"cax31"}},
	provider.ClassLarge:    {provider.ArchAMD64: {"ccx33", "cpx51", "cx52"}, provider.ArchARM64: {"cax41"}},
	provider.ClassBeast:    {provider.ArchAMD64: {"ccx63", "ccx53", "ccx43"}, provider.ArchARM64: {"cax41"}},
}

// DefaultServerTypes returns the default server type fallback lists: lease
// class -> architecture ("amd64", "arm64") -> server types, in order.
// Shared-vCPU types come first for small classes; dedicated (ccx) types lead
// for fast and bigger ones. The result is a fresh copy on every call, so
// changing it changes nothing in the package; use WithMachineTypes to
// configure a driver.
func DefaultServerTypes() map[string]map[string][]string {
	out := make(map[string]map[string][]string, len(defaultServerTypes))
	for class, m := range defaultServerTypes {
		out[class] = make(map[string][]string, len(m))
		for arch, ts := range m {
			out[class][arch] = slices.Clone(ts)
		}
	}
	return out
}

// MachineTypes returns the server type fallback list for a class and
// architecture.
func (d *Driver) MachineTypes(class, arch string) ([]string, error) {
	m, ok := d.o.types[class]
	if !ok {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: unknown lease class %q", class)
	}
	ts, ok := m[arch]
	if !ok || len(ts) == 0 {
		return nil, provider.Errorf(provider.ErrInvalidArgument, "hetzner: no server types for class %q and architecture %q", class, arch)
	}
	return slices.Clone(ts), nil
}
