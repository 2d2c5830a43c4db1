package etcdlock

// LockKey exposes the etcd key of a lock to the tests.
func (b *Backend) LockKey(key string) string { return b.lockKey(key) }

// QueuePrefix exposes the etcd key prefix of a lock's queue to the tests.
func (b *Backend) QueuePrefix(key string) string { return b.queuePrefix(key) }
