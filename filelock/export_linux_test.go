package filelock

import "golang.org/x/sys/unix"

// LifeLines returns the abstract socket names (with '@') of tickets 0 to
// n-1 of the key file at path.
func LifeLines(path string, n uint64) ([]string, error) {
	fd, err := openRetry(path, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	id, _ := identify(fd)
	names := make([]string, n)
	for t := range n {
		names[t] = lifeLine(id, t)
	}
	return names, nil
}
