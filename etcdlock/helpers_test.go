package etcdlock_test

import "go.uber.org/zap"

// quietLogger keeps the etcd client's retry warnings out of test output:
// tests that stop the server provoke them on purpose.
func quietLogger() *zap.Logger { return zap.NewNop() }
