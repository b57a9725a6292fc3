package hcloudfake

import (
	"crypto/md5"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"
	"golang.org/x/crypto/ssh"
)

// ---- actions ----

// newAction registers a running action (lock held).
func (f *Fake) newAction(command string, res ...schema.ActionResourceReference) *action {
	a := &action{steps: f.opts.ActionSteps, s: schema.Action{
		ID: f.newID("action"), Status: "running", Command: command,
		Started: f.now(), Resources: res,
	}}
	if d := f.opts.ActionDurations[command]; d > 0 {
		a.now, a.until = f.opts.Now, f.opts.Now().Add(d)
	}
	f.actions[a.s.ID] = a
	return a
}

// finishedAction registers an action that already succeeded (lock held).
func (f *Fake) finishedAction(command string, res ...schema.ActionResourceReference) *action {
	a := f.newAction(command, res...)
	a.finish()
	return a
}

// runningOn returns an action running on the resource (lock held), nil if
// none. The API runs one action at a time per resource and refuses another
// mutating request meanwhile with 423 locked ("The item you are trying to
// access is locked (there is already an Action running)",
// https://docs.hetzner.cloud/#errors).
func (f *Fake) runningOn(kind string, id int64) *action {
	var found *action
	for _, a := range f.actions {
		if a.s.Status != "running" {
			continue
		}
		for _, res := range a.s.Resources {
			if res.Type == kind && res.ID == id && (found == nil || a.s.ID < found.s.ID) {
				found = a
			}
		}
	}
	return found
}

// locked is the API's answer to a mutating request on a resource an action
// runs on.
func locked(kind string, id int64, a *action) *apiError {
	return errf("locked", "%s %d is locked by running action %d (%s)", kind, id, a.s.ID, a.s.Command)
}

// advance moves a running action one step (lock held).
func (a *action) advance() {
	if a == nil || a.s.Status != "running" {
		return
	}
	if !a.until.IsZero() {
		now := a.now()
		if !now.Before(a.until) {
			a.finish()
			return
		}
		d := a.until.Sub(a.s.Started)
		a.s.Progress = min(99, int(100-100*a.until.Sub(now)/max(d, 1)))
		return
	}
	a.reads++
	if a.reads >= a.steps {
		a.finish()
		return
	}
	a.s.Progress = a.reads * 100 / a.steps
}

func (a *action) finish() {
	now := a.s.Started
	if a.fail != nil {
		a.s.Status = "error"
		a.s.Error = a.fail
		if a.fails != nil {
			a.fails()
		}
	} else {
		a.s.Status = "success"
		a.s.Progress = 100
		if a.done != nil {
			a.done()
		}
	}
	a.s.Finished = &now
}

func (f *Fake) listActions(r *http.Request, _ []byte) (int, any, *apiError) {
	q := r.URL.Query()
	ids := q["id"]
	if len(ids) == 0 {
		return 0, nil, invalidInput("id", "at least one action id is required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []schema.Action
	for _, v := range ids {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, nil, invalidInput("id", "must be an integer")
		}
		if a, ok := f.actions[id]; ok {
			a.advance()
			if st := q["status"]; len(st) > 0 && !contains(st, a.s.Status) {
				continue
			}
			out = append(out, a.s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	resp, aerr := paginate(r, "actions", out)
	return http.StatusOK, resp, aerr
}

// listResourceActions answers GET /servers/{id}/actions and
// /images/{id}/actions: the actions working on that resource (including
// finished ones), filtered by status, sorted by id. Reading them advances
// the running ones, like any read of an action.
func (f *Fake) listResourceActions(kind string) handlerFunc {
	return func(r *http.Request, _ []byte) (int, any, *apiError) {
		id, aerr := pathID(r, 1)
		if aerr != nil {
			return 0, nil, aerr
		}
		q := r.URL.Query()
		f.mu.Lock()
		defer f.mu.Unlock()
		exists := false
		switch kind {
		case "server":
			_, exists = f.servers[id]
		case "image":
			_, exists = f.images[id]
		}
		if !exists {
			return 0, nil, notFound(kind, id)
		}
		out := []schema.Action{}
		for _, a := range f.actions {
			for _, res := range a.s.Resources {
				if res.Type == kind && res.ID == id {
					a.advance()
					if st := q["status"]; len(st) == 0 || contains(st, a.s.Status) {
						out = append(out, a.s)
					}
					break
				}
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		resp, aerr := paginate(r, "actions", out)
		return http.StatusOK, resp, aerr
	}
}

func (f *Fake) getAction(r *http.Request, _ []byte) (int, any, *apiError) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	id, err := strconv.ParseInt(parts[len(parts)-1], 10, 64)
	if err != nil {
		return 0, nil, invalidInput("id", "must be an integer")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.actions[id]
	if !ok {
		return 0, nil, notFound("action", id)
	}
	a.advance()
	return http.StatusOK, schema.ActionGetResponse{Action: a.s}, nil
}

// ---- servers ----

var hostnameRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$`)

// view returns the API view of a server, advancing its create action (lock
// held): reading a server is how clients poll it.
func (f *Fake) viewServer(s *server) schema.Server {
	s.create.advance()
	return copyServer(s.s)
}

func (f *Fake) listServers(r *http.Request, _ []byte) (int, any, *apiError) {
	q := r.URL.Query()
	sel, aerr := parseSelector(q.Get("label_selector"))
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []schema.Server
	for _, s := range f.servers {
		v := f.viewServer(s)
		if !sel.matches(v.Labels) {
			continue
		}
		if n := q.Get("name"); n != "" && v.Name != n {
			continue
		}
		if st := q["status"]; len(st) > 0 && !contains(st, v.Status) {
			continue
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	resp, aerr := paginate(r, "servers", out)
	return http.StatusOK, resp, aerr
}

func (f *Fake) getServer(r *http.Request, _ []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.servers[id]
	if !ok {
		return 0, nil, notFound("server", id)
	}
	return http.StatusOK, schema.ServerGetResponse{Server: f.viewServer(s)}, nil
}

func (f *Fake) nextIPv4() (string, bool) {
	ranges := []string{"203.0.113.", "198.51.100.", "192.0.2."}
	n := f.ipCounter
	f.ipCounter++
	r := n / 244
	if r >= len(ranges) {
		return "", false
	}
	return ranges[r] + strconv.Itoa(10+n%244), true
}

func (f *Fake) createServer(r *http.Request, body []byte) (int, any, *apiError) {
	var req schema.ServerCreateRequest
	if aerr := decode(body, &req); aerr != nil {
		return 0, nil, aerr
	}
	if req.Name == "" || !hostnameRe.MatchString(req.Name) || len(req.Name) > 63 {
		return 0, nil, invalidInput("name", "name must be a valid hostname")
	}
	if len(req.UserData) > 32*1024 {
		return 0, nil, invalidInput("user_data", "user_data must be at most 32 KiB")
	}
	labels := map[string]string{}
	if req.Labels != nil {
		labels = copyLabels(*req.Labels)
	}
	if aerr := validateLabels(labels); aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	st, ok := f.types[req.ServerType.Name]
	if !ok && req.ServerType.ID != 0 {
		for _, t := range f.opts.ServerTypes {
			if int64(serverTypeID(t.Name)) == req.ServerType.ID {
				st, ok = t, true
			}
		}
	}
	if !ok {
		f.mu.Unlock()
		return 0, nil, invalidInput("server_type", fmt.Sprintf("server type %v not found", req.ServerType))
	}
	loc, aerr := f.placeServer(req.Location, st.Name)
	if aerr != nil {
		f.mu.Unlock()
		return 0, nil, aerr
	}
	img := f.findImage(req.Image, st.Architecture)
	if img == nil {
		f.mu.Unlock()
		return 0, nil, invalidInput("image", fmt.Sprintf("image %v not found", req.Image))
	}
	if img.s.Status != "available" {
		f.mu.Unlock()
		return 0, nil, errf("resource_unavailable", "image %d is not available", img.s.ID)
	}
	if img.s.Architecture != st.Architecture {
		f.mu.Unlock()
		return 0, nil, invalidInput("image", fmt.Sprintf("image architecture %s does not match server type architecture %s", img.s.Architecture, st.Architecture))
	}
	for _, s := range f.servers {
		if s.s.Name == req.Name {
			f.mu.Unlock()
			return 0, nil, errf("uniqueness_error", "server name is already used")
		}
	}
	for _, kid := range req.SSHKeys {
		if _, ok := f.keys[kid]; !ok {
			f.mu.Unlock()
			return 0, nil, invalidInput("ssh_keys", fmt.Sprintf("ssh key %d not found", kid))
		}
	}
	enableV4, enableV6 := true, true
	if req.PublicNet != nil {
		enableV4, enableV6 = req.PublicNet.EnableIPv4, req.PublicNet.EnableIPv6
	}
	id := f.newID("server")
	ip := ""
	if enableV4 {
		var ok bool
		if ip, ok = f.nextIPv4(); !ok {
			f.mu.Unlock()
			return 0, nil, errf("resource_limit_exceeded", "no more fake IPv4 addresses")
		}
	}
	imgCopy := copyImage(img.s)
	s := &server{userData: req.UserData, s: schema.Server{
		ID: id, Name: req.Name, Status: "initializing", Created: f.now(),
		ServerType: schema.ServerType{
			ID: int64(serverTypeID(st.Name)), Name: st.Name, Cores: st.Cores, Memory: st.MemoryGB,
			Disk: st.DiskGB, StorageType: "local", CPUType: st.CPUType, Architecture: st.Architecture,
		},
		Location:        schema.Location{ID: int64(1 + indexOf(f.opts.Locations, loc)), Name: loc, NetworkZone: "eu-central"},
		Image:           &imgCopy,
		Labels:          labels,
		PrimaryDiskSize: st.DiskGB,
		IncludedTraffic: 21990232555520,
		PrivateNet:      []schema.ServerPrivateNet{},
		Volumes:         []int64{},
		LoadBalancers:   []int64{},
	}}
	if ip != "" {
		s.s.PublicNet.IPv4 = schema.ServerPublicNetIPv4{ID: id + 7000000, IP: ip, DNSPtr: "static." + ip + ".clients.your-server.de"}
	}
	if enableV6 {
		s.s.PublicNet.IPv6 = schema.ServerPublicNetIPv6{ID: id + 8000000, IP: fmt.Sprintf("2001:db8:%x::/64", id)}
	}
	s.s.PublicNet.FloatingIPs = []int64{}
	for i, nid := range req.Networks {
		s.s.PrivateNet = append(s.s.PrivateNet, schema.ServerPrivateNet{
			Network: nid, IP: fmt.Sprintf("10.%d.%d.%d", i, (id/250)%250, 2+id%250), AliasIPs: []string{},
			MACAddress: fmt.Sprintf("86:00:00:%02x:%02x:%02x", i, (id>>8)&0xff, id&0xff),
		})
	}
	ref := schema.ActionResourceReference{ID: id, Type: "server"}
	s.create = f.newAction("create_server", ref)
	s.create.done = func() { s.s.Status = "running" }
	if f.lateNoCap[loc] {
		s.create.fail = &schema.ActionError{Code: "resource_unavailable", Message: "resource is currently unavailable in location " + loc}
		s.create.fails = func() { s.s.Status = "off" }
	}
	f.servers[id] = s
	boot := f.opts.Boot
	breq := BootRequest{ID: id, Name: req.Name, UserData: req.UserData, IPv4: ip, Labels: copyLabels(labels),
		ServerType: st.Name, Architecture: st.Architecture, Image: img.s.ID}
	f.mu.Unlock()

	if boot != nil {
		box, err := boot(f.bootCtx, breq)
		f.mu.Lock()
		cur, alive := f.servers[id]
		switch {
		case err != nil:
			// The create action runs its course and then fails, as on the
			// API; the server ends up off.
			s.create.fail = &schema.ActionError{Code: "server_error", Message: "boot failed: " + err.Error()}
			s.create.fails = func() { s.s.Status = "off" }
		case !alive || cur != s || f.closed:
			defer func() { _ = box.Close() }()
		default:
			s.box = box
		}
		f.mu.Unlock()
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	resp := schema.ServerCreateResponse{Server: copyServer(s.s), Action: s.create.s, NextActions: []schema.Action{}}
	if len(req.SSHKeys) == 0 {
		pw := "fake-root-password"
		resp.RootPassword = &pw
	}
	return http.StatusCreated, resp, nil
}

// placeServer picks the location of a new server of type typ (lock held):
// the one asked for, or without one the first location with capacity. A
// location out of stock answers resource_unavailable naming it, as the API
// does ("try with a different location").
func (f *Fake) placeServer(asked, typ string) (string, *apiError) {
	if asked != "" {
		if !contains(f.opts.Locations, asked) {
			return "", invalidInput("location", fmt.Sprintf("location %s not found", asked))
		}
		if f.outOfStock(asked, typ) {
			return "", errf("resource_unavailable", "unable to provision server type %s in location %s: no capacity, try with a different location or try later", typ, asked)
		}
		return asked, nil
	}
	for _, l := range f.opts.Locations {
		if !f.outOfStock(l, typ) {
			return l, nil
		}
	}
	return "", errf("resource_unavailable", "unable to provision server type %s: no capacity in any location, try later", typ)
}

func (f *Fake) outOfStock(location, typ string) bool {
	m := f.noCapacity[location]
	return m[""] || m[typ]
}

// SetNoCapacity makes location out of stock for the server types (for
// every type when none is given): POST /servers there answers
// resource_unavailable. SetCapacity undoes it.
func (f *Fake) SetNoCapacity(location string, serverTypes ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.noCapacity[location] == nil {
		f.noCapacity[location] = map[string]bool{}
	}
	if len(serverTypes) == 0 {
		f.noCapacity[location][""] = true
	}
	for _, t := range serverTypes {
		f.noCapacity[location][t] = true
	}
}

// SetLateNoCapacity makes location accept server creates whose
// create_server action then fails with resource_unavailable (after its
// running steps), leaving the server "off". SetCapacity undoes it.
func (f *Fake) SetLateNoCapacity(location string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lateNoCap[location] = true
}

// SetCapacity gives location capacity for every server type again.
func (f *Fake) SetCapacity(location string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.noCapacity, location)
	delete(f.lateNoCap, location)
}

func indexOf(xs []string, x string) int {
	for i, y := range xs {
		if x == y {
			return i
		}
	}
	return -1
}

func serverTypeID(name string) int {
	for i, t := range defaultServerTypes {
		if t.Name == name {
			return i + 1
		}
	}
	sum := 0
	for _, c := range name {
		sum = sum*31 + int(c)
	}
	return 1000 + sum%100000
}

// findImage resolves an id-or-name image reference for an architecture
// (lock held). Names match system images only, as on the API.
func (f *Fake) findImage(ref schema.IDOrName, arch string) *image {
	if ref.ID != 0 {
		return f.images[ref.ID]
	}
	if id, err := strconv.ParseInt(ref.Name, 10, 64); err == nil {
		return f.images[id]
	}
	for _, im := range f.images {
		if im.s.Name != nil && *im.s.Name == ref.Name && im.s.Architecture == arch {
			return im
		}
	}
	return nil
}

func (f *Fake) updateServer(r *http.Request, body []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	var req schema.ServerUpdateRequest
	if aerr := decode(body, &req); aerr != nil {
		return 0, nil, aerr
	}
	if req.Labels != nil {
		if aerr := validateLabels(*req.Labels); aerr != nil {
			return 0, nil, aerr
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.servers[id]
	if !ok {
		return 0, nil, notFound("server", id)
	}
	if req.Name != "" {
		if !hostnameRe.MatchString(req.Name) {
			return 0, nil, invalidInput("name", "name must be a valid hostname")
		}
		for _, o := range f.servers {
			if o.s.Name == req.Name && o != s {
				return 0, nil, errf("uniqueness_error", "server name is already used")
			}
		}
		s.s.Name = req.Name
	}
	if req.Labels != nil {
		s.s.Labels = copyLabels(*req.Labels)
	}
	return http.StatusOK, schema.ServerUpdateResponse{Server: copyServer(s.s)}, nil
}

func (f *Fake) deleteServer(r *http.Request, _ []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	s, ok := f.servers[id]
	if !ok {
		f.mu.Unlock()
		return 0, nil, notFound("server", id)
	}
	if s.s.Protection.Delete {
		f.mu.Unlock()
		return 0, nil, errf("protected", "server %d is delete protected", id)
	}
	// Deleting is refused while an action runs on the server, except its
	// create_server: a server may be deleted while it is initializing
	// (whether the API locks that too is not known; clients retry locked
	// either way).
	if a := f.runningOn("server", id); a != nil && a != s.create {
		f.mu.Unlock()
		return 0, nil, locked("server", id, a)
	}
	delete(f.servers, id)
	box := s.box
	s.box = nil
	a := f.newAction("delete_server", schema.ActionResourceReference{ID: id, Type: "server"})
	f.mu.Unlock()
	if box != nil {
		_ = box.Close()
	}
	return http.StatusOK, schema.ServerDeleteResponse{Action: a.s}, nil
}

func (f *Fake) serverPower(command, status string) handlerFunc {
	return func(r *http.Request, _ []byte) (int, any, *apiError) {
		id, aerr := pathID(r, 1)
		if aerr != nil {
			return 0, nil, aerr
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		s, ok := f.servers[id]
		if !ok {
			return 0, nil, notFound("server", id)
		}
		if a := f.runningOn("server", id); a != nil {
			return 0, nil, locked("server", id, a)
		}
		a := f.newAction(command, schema.ActionResourceReference{ID: id, Type: "server"})
		a.done = func() { s.s.Status = status }
		return http.StatusCreated, map[string]any{"action": a.s}, nil
	}
}

func (f *Fake) createImage(r *http.Request, body []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	var req schema.ServerActionCreateImageRequest
	if len(body) > 0 {
		if aerr := decode(body, &req); aerr != nil {
			return 0, nil, aerr
		}
	}
	typ := "snapshot"
	if req.Type != nil {
		typ = *req.Type
	}
	if typ != "snapshot" && typ != "backup" {
		return 0, nil, invalidInput("type", "type must be snapshot or backup")
	}
	labels := map[string]string{}
	if req.Labels != nil {
		labels = copyLabels(*req.Labels)
	}
	if aerr := validateLabels(labels); aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.servers[id]
	if !ok {
		return 0, nil, notFound("server", id)
	}
	if a := f.runningOn("server", id); a != nil {
		return 0, nil, locked("server", id, a)
	}
	desc := ""
	if req.Description != nil {
		desc = *req.Description
	}
	imgID := f.newID("image")
	created := f.now()
	osver := ""
	if s.s.Image != nil && s.s.Image.OSVersion != nil {
		osver = *s.s.Image.OSVersion
	}
	flavor := "unknown"
	if s.s.Image != nil {
		flavor = s.s.Image.OSFlavor
	}
	im := &image{s: schema.Image{
		ID: imgID, Status: "creating", Type: typ, Description: desc,
		DiskSize: float32(s.s.PrimaryDiskSize), Created: &created,
		CreatedFrom: &schema.ImageCreatedFrom{ID: id, Name: s.s.Name},
		OSFlavor:    flavor, OSVersion: &osver, Architecture: s.s.ServerType.Architecture,
		Labels: labels,
	}}
	f.images[imgID] = im
	a := f.newAction("create_image",
		schema.ActionResourceReference{ID: id, Type: "server"},
		schema.ActionResourceReference{ID: imgID, Type: "image"})
	size := f.opts.ImageSizeGB
	a.done = func() {
		im.s.Status = "available"
		im.s.ImageSize = &size
	}
	im.create = a
	if hook := f.opts.Snapshot; hook != nil {
		f.mu.Unlock()
		err := hook(f.bootCtx, id, imgID)
		f.mu.Lock()
		if err != nil && a.s.Status == "running" {
			a.fail = &schema.ActionError{Code: "server_error", Message: "snapshot failed: " + err.Error()}
			a.fails = func() { im.s.Status = "unavailable" }
		}
	}
	return http.StatusCreated, schema.ServerActionCreateImageResponse{Action: a.s, Image: copyImage(im.s)}, nil
}

// ---- images ----

func (f *Fake) viewImage(im *image) schema.Image {
	im.create.advance()
	return copyImage(im.s)
}

func (f *Fake) listImages(r *http.Request, _ []byte) (int, any, *apiError) {
	q := r.URL.Query()
	sel, aerr := parseSelector(q.Get("label_selector"))
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []schema.Image
	for _, im := range f.images {
		v := f.viewImage(im)
		if !sel.matches(v.Labels) {
			continue
		}
		if t := q["type"]; len(t) > 0 && !contains(t, v.Type) {
			continue
		}
		if st := q["status"]; len(st) > 0 && !contains(st, v.Status) {
			continue
		}
		if a := q["architecture"]; len(a) > 0 && !contains(a, v.Architecture) {
			continue
		}
		if n := q.Get("name"); n != "" && (v.Name == nil || *v.Name != n) {
			continue
		}
		if b := q.Get("bound_to"); b != "" && (v.BoundTo == nil || strconv.FormatInt(*v.BoundTo, 10) != b) {
			continue
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	resp, aerr := paginate(r, "images", out)
	return http.StatusOK, resp, aerr
}

func (f *Fake) getImage(r *http.Request, _ []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[id]
	if !ok {
		return 0, nil, notFound("image", id)
	}
	return http.StatusOK, schema.ImageGetResponse{Image: f.viewImage(im)}, nil
}

func (f *Fake) updateImage(r *http.Request, body []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	var req schema.ImageUpdateRequest
	if aerr := decode(body, &req); aerr != nil {
		return 0, nil, aerr
	}
	if req.Labels != nil {
		if aerr := validateLabels(*req.Labels); aerr != nil {
			return 0, nil, aerr
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[id]
	if !ok {
		return 0, nil, notFound("image", id)
	}
	if im.s.Type == "system" {
		return 0, nil, errf("forbidden", "system images cannot be modified")
	}
	if req.Description != nil {
		im.s.Description = *req.Description
	}
	if req.Type != nil {
		if *req.Type != "snapshot" {
			return 0, nil, invalidInput("type", "type can only be converted to snapshot")
		}
		im.s.Type = "snapshot"
	}
	if req.Labels != nil {
		im.s.Labels = copyLabels(*req.Labels)
	}
	return http.StatusOK, schema.ImageUpdateResponse{Image: copyImage(im.s)}, nil
}

func (f *Fake) deleteImage(r *http.Request, _ []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[id]
	if !ok {
		return 0, nil, notFound("image", id)
	}
	if im.s.Type == "system" {
		return 0, nil, errf("forbidden", "system images cannot be deleted")
	}
	if im.s.Protection.Delete {
		return 0, nil, errf("protected", "image %d is delete protected", id)
	}
	if a := f.runningOn("image", id); a != nil && a != im.create {
		return 0, nil, locked("image", id, a)
	}
	if im.create != nil && im.create.s.Status == "running" {
		im.create.fail = &schema.ActionError{Code: "image_deleted", Message: "image was deleted during creation"}
		im.create.finish()
	}
	delete(f.images, id)
	if hook := f.opts.ImageDeleted; hook != nil {
		f.mu.Unlock()
		hook(id)
		f.mu.Lock()
	}
	return http.StatusNoContent, nil, nil
}

func (f *Fake) imageProtection(r *http.Request, body []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	var req schema.ImageActionChangeProtectionRequest
	if aerr := decode(body, &req); aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	im, ok := f.images[id]
	if !ok {
		return 0, nil, notFound("image", id)
	}
	if im.s.Type == "system" {
		return 0, nil, errf("forbidden", "system images cannot be protected")
	}
	if a := f.runningOn("image", id); a != nil {
		return 0, nil, locked("image", id, a)
	}
	a := f.finishedAction("change_protection", schema.ActionResourceReference{ID: id, Type: "image"})
	if req.Delete != nil {
		im.s.Protection.Delete = *req.Delete
	}
	return http.StatusCreated, schema.ImageActionChangeProtectionResponse{Action: a.s}, nil
}

// ---- SSH keys ----

func fingerprint(pub string) (string, *apiError) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		return "", invalidInput("public_key", "invalid public key")
	}
	sum := md5.Sum(k.Marshal())
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02x", b)
	}
	return strings.Join(parts, ":"), nil
}

func (f *Fake) createKey(r *http.Request, body []byte) (int, any, *apiError) {
	var req schema.SSHKeyCreateRequest
	if aerr := decode(body, &req); aerr != nil {
		return 0, nil, aerr
	}
	if req.Name == "" {
		return 0, nil, invalidInput("name", "name is required")
	}
	fp, aerr := fingerprint(req.PublicKey)
	if aerr != nil {
		return 0, nil, aerr
	}
	labels := map[string]string{}
	if req.Labels != nil {
		labels = copyLabels(*req.Labels)
	}
	if aerr := validateLabels(labels); aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range f.keys {
		if k.Name == req.Name && !f.opts.AllowDuplicateSSHKeyNames {
			return 0, nil, errf("uniqueness_error", "SSH key with the same name already exists")
		}
		if k.Fingerprint == fp {
			return 0, nil, errf("uniqueness_error", "SSH key with the same fingerprint already exists")
		}
	}
	k := &schema.SSHKey{ID: f.newID("ssh_key"), Name: req.Name, Fingerprint: fp,
		PublicKey: strings.TrimSpace(req.PublicKey), Labels: labels, Created: f.now()}
	f.keys[k.ID] = k
	c := *k
	c.Labels = copyLabels(k.Labels)
	return http.StatusCreated, schema.SSHKeyCreateResponse{SSHKey: c}, nil
}

func (f *Fake) listKeys(r *http.Request, _ []byte) (int, any, *apiError) {
	q := r.URL.Query()
	sel, aerr := parseSelector(q.Get("label_selector"))
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []schema.SSHKey
	for _, k := range f.keys {
		if !sel.matches(k.Labels) {
			continue
		}
		if n := q.Get("name"); n != "" && k.Name != n {
			continue
		}
		if fp := q.Get("fingerprint"); fp != "" && k.Fingerprint != fp {
			continue
		}
		c := *k
		c.Labels = copyLabels(k.Labels)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	resp, aerr := paginate(r, "ssh_keys", out)
	return http.StatusOK, resp, aerr
}

func (f *Fake) getKey(r *http.Request, _ []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[id]
	if !ok {
		return 0, nil, notFound("ssh_key", id)
	}
	c := *k
	c.Labels = copyLabels(k.Labels)
	return http.StatusOK, schema.SSHKeyGetResponse{SSHKey: c}, nil
}

func (f *Fake) updateKey(r *http.Request, body []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	var req schema.SSHKeyUpdateRequest
	if aerr := decode(body, &req); aerr != nil {
		return 0, nil, aerr
	}
	if req.Labels != nil {
		if aerr := validateLabels(*req.Labels); aerr != nil {
			return 0, nil, aerr
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.keys[id]
	if !ok {
		return 0, nil, notFound("ssh_key", id)
	}
	if req.Name != "" {
		k.Name = req.Name
	}
	if req.Labels != nil {
		k.Labels = copyLabels(*req.Labels)
	}
	c := *k
	c.Labels = copyLabels(k.Labels)
	return http.StatusOK, schema.SSHKeyUpdateResponse{SSHKey: c}, nil
}

func (f *Fake) deleteKey(r *http.Request, _ []byte) (int, any, *apiError) {
	id, aerr := pathID(r, 1)
	if aerr != nil {
		return 0, nil, aerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.keys[id]; !ok {
		return 0, nil, notFound("ssh_key", id)
	}
	delete(f.keys, id)
	return http.StatusNoContent, nil, nil
}

// ---- catalogue ----

func (f *Fake) listServerTypes(r *http.Request, _ []byte) (int, any, *apiError) {
	name := r.URL.Query().Get("name")
	var out []schema.ServerType
	for _, t := range f.opts.ServerTypes {
		if name != "" && t.Name != name {
			continue
		}
		out = append(out, schema.ServerType{ID: int64(serverTypeID(t.Name)), Name: t.Name, Cores: t.Cores,
			Memory: t.MemoryGB, Disk: t.DiskGB, StorageType: "local", CPUType: t.CPUType, Architecture: t.Architecture})
	}
	resp, aerr := paginate(r, "server_types", out)
	return http.StatusOK, resp, aerr
}

func (f *Fake) listLocations(r *http.Request, _ []byte) (int, any, *apiError) {
	var out []schema.Location
	for i, l := range f.opts.Locations {
		out = append(out, schema.Location{ID: int64(i + 1), Name: l, NetworkZone: "eu-central"})
	}
	resp, aerr := paginate(r, "locations", out)
	return http.StatusOK, resp, aerr
}
