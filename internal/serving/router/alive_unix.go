//go:build unix

package router

import (
	"syscall"
)

// alive reports whether an idle connection is still open: a peek that
// does not block finds nothing to read (EAGAIN). End of file means the
// replica closed it; data means it sent something unasked for. One system
// call, no deadline juggling (a past deadline makes Go fail a read before
// it asks the kernel).
func (c *upConn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	live := false
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		live = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait for readiness
	})
	return err == nil && live
}
