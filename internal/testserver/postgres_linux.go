package testserver

import "golang.org/x/sys/unix"

// removeShmSegment removes the shared memory segment id if it still has
// key and no process is attached to it: the id may since have gone to
// another segment.
func removeShmSegment(key uint32, id int) {
	var desc unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(id, unix.IPC_STAT, &desc); err != nil {
		return
	}
	if uint32(desc.Perm.Key) == key && desc.Nattch == 0 {
		_, _ = unix.SysvShmCtl(id, unix.IPC_RMID, nil)
	}
}
