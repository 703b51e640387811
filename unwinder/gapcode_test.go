package unwinder

import "testing"

// FuzzAmd64Insn checks that the decoder of gap code never reads past its
// input nor reports an instruction longer than it, whatever the bytes (the
// code of any file a process maps).
func FuzzAmd64Insn(f *testing.F) {
	for _, seed := range [][]byte{
		{0xf3, 0x0f, 0x1e, 0xfa, 0xe9, 0x77, 0xff, 0xff, 0xff},                   // frame_dummy
		{0x80, 0x3d, 0x9d, 0x2e, 0x00, 0x00, 0x00, 0x75, 0x2b, 0x55},             // __do_global_dtors_aux
		{0x48, 0x83, 0x3d, 0x2a, 0x2e, 0x00, 0x00, 0x00, 0x48, 0x89, 0xe5},       // cmpq; mov %rsp,%rbp
		{0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x1f}, // nops
		{0x48, 0x8d}, {0x0f, 0x1f, 0x44}, {0x66, 0x66, 0x66},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, code []byte) {
		for len(code) > 0 {
			n, eff := amd64Insn(code)
			if n < 0 || n > len(code) || eff < insnOther || eff > insnEnd {
				t.Fatalf("amd64Insn(% x) = %d, %d", code, n, eff)
			}
			if n == 0 {
				return
			}
			code = code[n:]
		}
	})
}
