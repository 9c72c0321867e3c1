//go:build !unix

package router

// alive cannot peek without blocking here; a stale connection then fails
// its request, which the retry policy handles.
func (c *upConn) alive() bool { return c.br.Buffered() == 0 }
