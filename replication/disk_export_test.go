package replication

// SetDiskFreeForTest replaces the query of the data filesystem's free
// space (nil restores it), so that a test can fill the disk without
// filling it.
func (n *Node) SetDiskFreeForTest(free func(dir string) (uint64, error)) {
	if free == nil {
		n.disk.free.Store(nil)
		return
	}
	n.disk.free.Store(&free)
}

// DiskReserve is diskReserve, for the external tests.
const DiskReserve = diskReserve
