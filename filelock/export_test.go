//go:build unix && !aix

package filelock

// LinksAndSize lets the benchmarks make the same stat call as the backend.
var LinksAndSize = linksAndSize

// NoAtime is the open flag the backend uses to skip access-time updates
// (0 where there is none).
const NoAtime = noatime
