// InjectFault: the fault hook the conformance suite (and tests) use to make
// a create fail with a class of error, or apply it and lose its reply.

package crabboxtest

import "github.com/crabbox/crabbox-go/provider"

type fault struct {
	err  error
	lost bool
}

// faultErrors are the errors the cloud answers each fault kind with.
var faultErrors = map[string]fault{
	"capacity":   {err: provider.Errorf(provider.ErrCapacity, "crabboxtest: injected: no capacity")},
	"quota":      {err: provider.Errorf(provider.ErrQuota, "crabboxtest: injected: quota exceeded")},
	"throttled":  {err: provider.Errorf(provider.ErrThrottled, "crabboxtest: injected: rate limited")},
	"permission": {err: provider.Errorf(provider.ErrPermission, "crabboxtest: injected: not allowed")},
	"lost-reply": {err: provider.Errorf(provider.ErrUnavailable, "crabboxtest: injected: the request was applied, its reply lost"), lost: true},
}

// InjectFault makes call ("CreateMachine" or "CreateImage") fail with the
// error of kind ("capacity", "quota", "throttled", "permission") until
// restore is called, or, for "lost-reply", apply the next call and answer
// it with ErrUnavailable as if its reply were lost. It has the shape
// providertest.Harness.Inject wants, with kind as a string.
func (c *Cloud) InjectFault(call, kind string) (restore func(), err error) {
	f, ok := faultErrors[kind]
	if !ok || (call != "CreateMachine" && call != "CreateImage") {
		return nil, provider.Errorf(provider.ErrUnsupported, "crabboxtest: no fault %q for %q", kind, call)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.faults == nil {
		c.faults = map[string]fault{}
	}
	c.faults[call] = f
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.faults, call)
	}, nil
}

// takeFault returns the fault for call, if any; a lost-reply fault is used
// up by the call that takes it.
func (c *Cloud) takeFault(call string) (error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.faults[call]
	if !ok {
		return nil, false
	}
	if f.lost {
		delete(c.faults, call)
	}
	return f.err, f.lost
}
