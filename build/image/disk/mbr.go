package disk

import (
	"encoding/binary"
	"fmt"
)

// Partition is one MBR partition, in 512-byte sectors.
type Partition struct {
	Type     byte // 0x0c FAT32 LBA, 0x83 Linux
	Bootable bool
	Start    uint32 // first sector
	Sectors  uint32
}

// MBR returns the 512-byte master boot record for up to four primary
// partitions with the given disk identifier (Linux's PARTUUID prefix).
// The CHS fields hold the "beyond 8 GiB" marker, as modern tools write
// them; every reader of these disks uses the LBA fields.
func MBR(diskID uint32, parts []Partition) ([]byte, error) {
	if len(parts) > 4 {
		return nil, fmt.Errorf("mbr: %d partitions, at most 4 primary ones fit", len(parts))
	}
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b[440:], diskID)
	var end uint32 = 1
	for i, p := range parts {
		if p.Start < end || p.Sectors == 0 {
			return nil, fmt.Errorf("mbr: partition %d (start %d, %d sectors) overlaps the one before it or is empty", i+1, p.Start, p.Sectors)
		}
		end = p.Start + p.Sectors
		e := b[446+16*i : 446+16*(i+1)]
		if p.Bootable {
			e[0] = 0x80
		}
		copy(e[1:4], []byte{0xfe, 0xff, 0xff})
		e[4] = p.Type
		copy(e[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(e[8:], p.Start)
		binary.LittleEndian.PutUint32(e[12:], p.Sectors)
	}
	b[510], b[511] = 0x55, 0xaa
	return b, nil
}
