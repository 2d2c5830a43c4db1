//go:build unix && !aix && !linux

package bench

import "golang.org/x/sys/unix"

// fileSize stats fd as the file backend does outside Linux.
func fileSize(fd int) (int64, error) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	return st.Size, err
}
