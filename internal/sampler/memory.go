package sampler

import (
	"reflect"

	"github.com/cilium/ebpf"
)

// MapBytes returns the kernel memory of each of the program's maps, by map
// name, as the kernel reports it (memlock in bpftool's words; the kernel
// charges it to the loading process's memory cgroup). The maps are
// preallocated, so it does not change while the sampler runs.
func (s *Sampler) MapBytes() map[string]uint64 { return s.mapBytes }

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
