package sampler

import (
	"reflect"

	"github.com/cilium/ebpf"
)

// MapBytes returns the kernel memory of each of the program's maps, by map
// name, as the kernel reports it now (memlock in bpftool's words; the
// kernel charges it to the loading process's memory cgroup). Arrays, ring
// buffers and LRU maps are preallocated; the hash maps of growingMaps
// grow and shrink with their entries where the kernel allows it.
func (s *Sampler) MapBytes() map[string]uint64 { return mapMemory(&s.objs.ScorchMaps) }

// mapMemory reads the memory of every *ebpf.Map field of maps (a bpf2go
// maps struct), named by its ebpf tag.
func mapMemory(maps any) map[string]uint64 {
	out := map[string]uint64{}
	v := reflect.ValueOf(maps).Elem()
	for i := range v.NumField() {
		m, ok := v.Field(i).Interface().(*ebpf.Map)
		if !ok || m == nil {
			continue
		}
		info, err := m.Info()
		if err != nil {
			continue
		}
		if n, ok := info.Memlock(); ok {
			out[v.Type().Field(i).Tag.Get("ebpf")] = n
		}
	}
	return out
}
