package redislock

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"time"

	"github.com/dlock-dev/dlock"
)

// metaBlob encodes the metadata of a grant as the MessagePack sequence the
// acquire script stores after the fence: SHA-1 of the token (hex, as Lua's
// redis.sha1hex writes it, so the scripts can tell whether the lock key's
// value is this grant's token), lock id, acquired time (ms since the
// epoch), host, pid, label. Encoding it here rather than in the script
// saves the server six arguments and a hash per acquire.
func metaBlob(req dlock.AcquireRequest, at time.Time) string {
	sum := sha1.Sum([]byte(req.Token))
	b := make([]byte, 0, 128+len(req.Owner.Host)+len(req.Owner.Label))
	b = appendMsgpackStrLen(b, hex.EncodedLen(len(sum)))
	b = hex.AppendEncode(b, sum[:])
	b = appendMsgpackString(b, req.LockID)
	b = appendMsgpackInt(b, at.UnixMilli())
	b = appendMsgpackString(b, req.Owner.Host)
	b = appendMsgpackInt(b, int64(req.Owner.PID))
	b = appendMsgpackString(b, req.Owner.Label)
	return string(b)
}

// appendMsgpackString appends s as a MessagePack str.
func appendMsgpackString(b []byte, s string) []byte {
	return append(appendMsgpackStrLen(b, len(s)), s...)
}

// appendMsgpackStrLen appends the header of a MessagePack str of n bytes.
func appendMsgpackStrLen(b []byte, n int) []byte {
	switch {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 1<<8:
		b = append(b, 0xd9, byte(n))
	case n < 1<<16:
		b = append(b, 0xda)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0xdb)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return b
}

// appendMsgpackInt appends v as a MessagePack int 64.
func appendMsgpackInt(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(v))
}
