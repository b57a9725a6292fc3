// Orphans: provider.OrphanSweeper deletes the keys of machines that no
// longer exist, once they are older than the grace.

package refdriver

import "context"

// SweepOrphans implements provider.OrphanSweeper: it deletes every key
// CreateMachine registered whose machine no longer exists and that is older
// than the orphan grace (WithOrphanGrace, on the WithClock clock), and
// returns how many it deleted. A younger key may belong to a lease between
// registering its key and creating its machine.
func (d *Driver) SweepOrphans(ctx context.Context) (int, error) {
	n := 0
	err := d.be.call(ctx, func(s *state) error {
		cutoff := d.o.now().Add(-d.o.orphanGrace)
		for token, created := range s.keys {
			if _, live := s.byToken[token]; live || created.After(cutoff) {
				continue
			}
			delete(s.keys, token)
			n++
		}
		return nil
	})
	return n, mapErr(err)
}
