package filelock

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// fileRecord is the state of one key as its file keeps it: one JSON object
// on the first line. A held record has a token hash; a free record (left by
// a release or a break) keeps only the key and the fence, so that the next
// grant continues from that fence.
//
// The file format is meant to be read by people and tools such as jq, and
// is written by [appendRecord] and read by [parseRecord]. Both are
// hand-written: every state change reads and writes one record, and
// encoding/json took 6µs for that against 2µs here, while a whole
// acquire+release pair must fit in 20µs (50,000 pairs/s).
type fileRecord struct {
	Key   string
	Fence uint64

	// QueueNext is the number the next waiter to join the key's FIFO queue
	// gets (see queue_linux.go); 0 until someone queued. FreedMono is when
	// a release or break freed the key (CLOCK_MONOTONIC ns, 0 if unknown):
	// how long a key has been free but promised to the first in line is
	// what lets the others pass a first in line that does not come. Both
	// are kept by free records.
	QueueNext uint64
	FreedMono int64

	// The rest is empty in a free record.
	LockID     string
	TokenHash  [sha256.Size]byte // SHA-256 of the token, never the token
	AcquiredAt time.Time
	ExpiresAt  time.Time // wall clock, for people and for other platforms
	Owner      fileOwner

	// BootID and ExpiresMono let Linux decide expiry on CLOCK_MONOTONIC,
	// which wall-clock changes do not move. A record from another boot is
	// expired.
	BootID      string
	ExpiresMono int64 // CLOCK_MONOTONIC nanoseconds
}

// fileOwner is dlock.Owner plus what the dead-holder check needs: the start
// time of process PID (in clock ticks since boot, field 22 of
// /proc/PID/stat) and the PID namespace in which PID is meaningful. Pids are
// reused; a pid together with its start time is not.
type fileOwner struct {
	Host       string
	PID        int
	StartTicks uint64
	PIDNS      string
	Label      string
}

// held reports whether r is a lease rather than a free record.
func (r *fileRecord) held() bool { return r.LockID != "" }

// readBack returns r as parseRecord reads appendRecord's encoding of it:
// free records keep only key and fence, times lose their monotonic reading
// and zone, invalid UTF-8 becomes U+FFFD. A process that finds a file still
// holding exactly the bytes it wrote uses this instead of parsing them
// again (FuzzRecord checks the two agree).
func (r *fileRecord) readBack() fileRecord {
	if !r.held() {
		return fileRecord{Key: validUTF8(r.Key), Fence: r.Fence, QueueNext: r.QueueNext, FreedMono: r.FreedMono}
	}
	out := *r
	out.FreedMono = 0
	out.Key, out.LockID, out.BootID = validUTF8(r.Key), validUTF8(r.LockID), validUTF8(r.BootID)
	out.Owner.Host, out.Owner.PIDNS, out.Owner.Label = validUTF8(r.Owner.Host), validUTF8(r.Owner.PIDNS), validUTF8(r.Owner.Label)
	out.AcquiredAt, out.ExpiresAt = r.AcquiredAt.UTC(), r.ExpiresAt.UTC()
	if r.BootID == "" {
		out.ExpiresMono = 0
	}
	return out
}

// validUTF8 replaces each invalid byte of s with U+FFFD, as appendString
// writes it.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string([]rune(s))
}

// free returns the record a release leaves behind at monotonic time mono.
func (r *fileRecord) free(mono int64) fileRecord {
	return fileRecord{Key: r.Key, Fence: r.Fence, QueueNext: r.QueueNext, FreedMono: mono}
}

// JSON field names. Those shown by dlock's records are kept identical.
const (
	fKey         = "key"
	fFence       = "fence"
	fLockID      = "lock_id"
	fTokenHash   = "token_sha256"
	fAcquiredAt  = "acquired_at"
	fExpiresAt   = "expires_at"
	fOwner       = "owner"
	fHost        = "host"
	fPID         = "pid"
	fStartTicks  = "start_ticks"
	fPIDNS       = "pid_ns"
	fLabel       = "label"
	fBootID      = "boot_id"
	fExpiresMono = "expires_mono_ns"
	fQueueNext   = "queue_next"
	fFreedMono   = "freed_mono_ns"
)

// appendRecord appends r as one line of JSON, without the newline.
func appendRecord(b []byte, r *fileRecord) []byte {
	b = append(b, `{"`+fKey+`":`...)
	b = appendString(b, r.Key)
	b = append(b, `,"`+fFence+`":`...)
	b = strconv.AppendUint(b, r.Fence, 10)
	if r.QueueNext != 0 {
		b = append(b, `,"`+fQueueNext+`":`...)
		b = strconv.AppendUint(b, r.QueueNext, 10)
	}
	if !r.held() {
		if r.FreedMono != 0 {
			b = append(b, `,"`+fFreedMono+`":`...)
			b = strconv.AppendInt(b, r.FreedMono, 10)
		}
		return append(b, '}')
	}
	b = append(b, `,"`+fLockID+`":`...)
	b = appendString(b, r.LockID)
	b = append(b, `,"`+fTokenHash+`":"`...)
	b = hex.AppendEncode(b, r.TokenHash[:])
	b = append(b, `","`+fAcquiredAt+`":"`...)
	b = r.AcquiredAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","`+fExpiresAt+`":"`...)
	b = r.ExpiresAt.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","`+fOwner+`":{`...)
	comma := false
	field := func(name string) {
		if comma {
			b = append(b, ',')
		}
		comma = true
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
	}
	if o := &r.Owner; o.Host != "" {
		field(fHost)
		b = appendString(b, o.Host)
	}
	if o := &r.Owner; o.PID != 0 {
		field(fPID)
		b = strconv.AppendInt(b, int64(o.PID), 10)
	}
	if o := &r.Owner; o.StartTicks != 0 {
		field(fStartTicks)
		b = strconv.AppendUint(b, o.StartTicks, 10)
	}
	if o := &r.Owner; o.PIDNS != "" {
		field(fPIDNS)
		b = appendString(b, o.PIDNS)
	}
	if o := &r.Owner; o.Label != "" {
		field(fLabel)
		b = appendString(b, o.Label)
	}
	b = append(b, '}')
	if r.BootID != "" {
		b = append(b, `,"`+fBootID+`":`...)
		b = appendString(b, r.BootID)
		b = append(b, `,"`+fExpiresMono+`":`...)
		b = strconv.AppendInt(b, r.ExpiresMono, 10)
	}
	return append(b, '}')
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does, so the output is always valid JSON.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// errSyntax is wrapped into dlock.ErrCorrupt by the callers of parseRecord.
var errSyntax = errors.New("not a lock record")

// parseHints are strings a record probably repeats (the expected key, our
// host, boot id and PID namespace): the parser returns these instead of
// copying equal bytes into new strings.
type parseHints struct {
	key, host, boot, pidNS string
}

// parseRecord parses the JSON object at the start of line (trailing spaces
// allowed). Unknown fields are skipped, so later versions may add some. It
// accepts any valid JSON for the known fields' types and rejects the rest.
// hints may be nil.
func parseRecord(line []byte, hints *parseHints) (fileRecord, error) {
	var r fileRecord
	if hints == nil {
		hints = &parseHints{}
	}
	p := parser{s: line}
	var sawKey, sawFence, sawHash bool
	err := p.object(func(name []byte) error {
		var err error
		switch string(name) {
		case fKey:
			r.Key, err = p.strHint(hints.key)
			sawKey = true
		case fFence:
			r.Fence, err = p.uint()
			sawFence = true
		case fLockID:
			r.LockID, err = p.str()
		case fTokenHash:
			var s []byte
			if s, err = p.rawStr(); err == nil {
				if hex.DecodedLen(len(s)) != len(r.TokenHash) {
					return errSyntax
				}
				_, err = hex.Decode(r.TokenHash[:], s)
				sawHash = true
			}
		case fAcquiredAt:
			r.AcquiredAt, err = p.time()
		case fExpiresAt:
			r.ExpiresAt, err = p.time()
		case fOwner:
			err = p.object(func(name []byte) error {
				var err error
				o := &r.Owner
				switch string(name) {
				case fHost:
					o.Host, err = p.strHint(hints.host)
				case fPID:
					var n int64
					n, err = p.int()
					o.PID = int(n)
				case fStartTicks:
					o.StartTicks, err = p.uint()
				case fPIDNS:
					o.PIDNS, err = p.strHint(hints.pidNS)
				case fLabel:
					o.Label, err = p.str()
				default:
					err = p.skip()
				}
				return err
			})
		case fBootID:
			r.BootID, err = p.strHint(hints.boot)
		case fExpiresMono:
			r.ExpiresMono, err = p.int()
		case fQueueNext:
			r.QueueNext, err = p.uint()
		case fFreedMono:
			r.FreedMono, err = p.int()
		default:
			err = p.skip()
		}
		return err
	})
	if err != nil {
		return fileRecord{}, err
	}
	p.ws()
	if p.i != len(p.s) {
		return fileRecord{}, errSyntax
	}
	// A lease must carry everything the expiry and ownership checks use.
	if !sawKey || !sawFence || r.held() != sawHash || (r.held() && r.ExpiresAt.IsZero()) {
		return fileRecord{}, errSyntax
	}
	return r, nil
}

// parser is a small JSON reader for the fixed shape of a record.
type parser struct {
	s []byte
	i int
}

func (p *parser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) next(c byte) bool {
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// object reads {"name": value, ...}, calling field for each name with p
// positioned at the value.
func (p *parser) object(field func(name []byte) error) error {
	if !p.next('{') {
		return errSyntax
	}
	if p.next('}') {
		return nil
	}
	for {
		name, err := p.rawStr()
		if err != nil {
			return err
		}
		if !p.next(':') {
			return errSyntax
		}
		if err := field(name); err != nil {
			return err
		}
		if p.next('}') {
			return nil
		}
		if !p.next(',') {
			return errSyntax
		}
	}
}

// rawStr returns the contents of a string without escapes, or, if it has
// escapes, its decoded form.
func (p *parser) rawStr() ([]byte, error) {
	p.ws()
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return nil, errSyntax
	}
	p.i++
	start := p.i
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			if !utf8.Valid(s) {
				return []byte(string([]rune(string(s)))), nil // as encoding/json: U+FFFD
			}
			return s, nil
		case c == '\\':
			return p.escaped(start)
		case c < 0x20:
			return nil, errSyntax
		}
		p.i++
	}
	return nil, errSyntax
}

// escaped decodes the rest of a string that contains an escape; p.i is at
// the first backslash and start at the first byte of the contents.
func (p *parser) escaped(start int) ([]byte, error) {
	out := append([]byte(nil), p.s[start:p.i]...)
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			if !utf8.Valid(out) {
				return []byte(string([]rune(string(out)))), nil
			}
			return out, nil
		case c < 0x20:
			return nil, errSyntax
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.s) {
			return nil, errSyntax
		}
		e := p.s[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return nil, errSyntax
			}
			if utf16IsSurrogate(r) {
				// A high surrogate followed by \uDC00-\uDFFF is one rune;
				// anything else is U+FFFD, as in encoding/json.
				if r < 0xdc00 && p.i+1 < len(p.s) && p.s[p.i] == '\\' && p.s[p.i+1] == 'u' {
					save := p.i
					p.i += 2
					if r2, ok := p.hex4(); ok && r2 >= 0xdc00 && r2 < 0xe000 {
						r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
					} else {
						p.i = save
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, errSyntax
		}
	}
	return nil, errSyntax
}

func utf16IsSurrogate(r rune) bool { return r >= 0xd800 && r < 0xe000 }

func (p *parser) hex4() (rune, bool) {
	if p.i+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range p.s[p.i : p.i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	p.i += 4
	return r, true
}

func (p *parser) str() (string, error) {
	s, err := p.rawStr()
	return string(s), err
}

// strHint is str, returning hint itself when the string equals it.
func (p *parser) strHint(hint string) (string, error) {
	s, err := p.rawStr()
	if err == nil && string(s) == hint {
		return hint, nil
	}
	return string(s), err
}

func (p *parser) time() (time.Time, error) {
	s, err := p.rawStr()
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	if err != nil {
		return time.Time{}, errSyntax
	}
	return t, nil
}

// number returns the bytes of a JSON number that is an integer.
func (p *parser) number() ([]byte, error) {
	p.ws()
	start := p.i
	if p.i < len(p.s) && p.s[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
		p.i++
	}
	n := p.i - digits
	if n == 0 || (n > 1 && p.s[digits] == '0') {
		return nil, errSyntax
	}
	return p.s[start:p.i], nil
}

func (p *parser) uint() (uint64, error) {
	s, err := p.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(s), 10, 64)
	if err != nil {
		return 0, errSyntax
	}
	return n, nil
}

func (p *parser) int() (int64, error) {
	s, err := p.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(string(s), 10, 64)
	if err != nil {
		return 0, errSyntax
	}
	return n, nil
}

// skip skips any JSON value, for fields this version does not know.
func (p *parser) skip() error {
	p.ws()
	if p.i >= len(p.s) {
		return errSyntax
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(func([]byte) error { return p.skip() })
	case c == '[':
		p.i++
		if p.next(']') {
			return nil
		}
		for {
			if err := p.skip(); err != nil {
				return err
			}
			if p.next(']') {
				return nil
			}
			if !p.next(',') {
				return errSyntax
			}
		}
	case c == '"':
		_, err := p.rawStr()
		return err
	case c == '-' || ('0' <= c && c <= '9'):
		// Any JSON number, fractions and exponents included.
		start := p.i
		p.i++
		for p.i < len(p.s) && isNumberByte(p.s[p.i]) {
			p.i++
		}
		if _, err := strconv.ParseFloat(string(p.s[start:p.i]), 64); err != nil {
			var ne *strconv.NumError
			if !errors.As(err, &ne) || ne.Err != strconv.ErrRange {
				return errSyntax
			}
		}
		return nil
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if len(p.s)-p.i >= len(lit) && string(p.s[p.i:p.i+len(lit)]) == lit {
				p.i += len(lit)
				return nil
			}
		}
		return errSyntax
	}
}

func isNumberByte(c byte) bool {
	return ('0' <= c && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}
