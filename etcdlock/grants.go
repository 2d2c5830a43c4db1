package etcdlock

import "sync"

// grants remembers the leases this backend granted, by token, so that the
// holder's refreshes and its release go straight to the lease: one request
// instead of a read of the key and then the request. A lease granted to a
// token is that grant's alone, and only a release, a break or its end
// deletes the key on it (see Break), so a keep-alive or revocation of it
// that etcd accepts acts on the holder's key. When etcd no longer knows the
// lease, the operation forgets it and reads the key as a stranger's token
// would: the key may have moved to a new lease by a refresh of the same
// token elsewhere.
type grants struct {
	mu sync.Mutex
	m  map[string]grant // by token
}

func (gs *grants) put(token string, g grant) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.m == nil {
		gs.m = map[string]grant{}
	}
	gs.m[token] = g
}

// get returns the grant of token on key, if this backend made it.
func (gs *grants) get(token, key string) (grant, bool) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	g, ok := gs.m[token]
	return g, ok && g.Key == key
}

// update replaces the grant of token, if this backend remembers one.
func (gs *grants) update(token string, g grant) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if _, ok := gs.m[token]; ok {
		gs.m[token] = g
	}
}

func (gs *grants) drop(token string) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	delete(gs.m, token)
}
