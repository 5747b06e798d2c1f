// Command go_tlog checks inferpay's transparency-log bytes with Go's own code
// (golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog), as an
// independent verifier for tests/ledger/test_tlog_go_interop.py.
//
// Every mode reads files, checks, prints one JSON object on stdout and exits
// 0; any failure prints "FAIL: <reason>" on stderr and exits 1.
//
//	go_tlog note -note FILE -vkey V [-vkey V ...]
//	    note.Open with the given keys (type 0x01 by note.NewVerifier,
//	    type 0x04 cosignature/v1 keys by the cosigVerifier below); prints the
//	    verified signers and each cosignature's timestamp.
//	go_tlog checkpoint -note FILE -vkey V
//	    note.Open, then the checkpoint body parsed here; prints origin, size, root.
//	go_tlog inclusion -vkey V -proof FILE -entry FILE
//	    a c2sp.org/tlog-proof@v1 parsed here, its checkpoint opened with
//	    note.Open, then tlog.CheckRecord on tlog.RecordHash(entry).
//	go_tlog consistency -vkey V -old FILE -new FILE -hashes FILE
//	    two signed checkpoints and a consistency proof (one base64 hash a
//	    line), checked with tlog.CheckTree.
//	go_tlog tiles -dir DIR -size N -root B64 -index I
//	    tiles in C2SP layout under DIR read through tlog.TileHashReader
//	    (which authenticates them against the root); prints tlog.TreeHash
//	    and tlog.ProveRecord(size, index).
//
// This program must never write anywhere but stdout and stderr.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func read(path string) []byte {
	data, err := os.ReadFile(path)
	check(err, "read "+path)
	return data
}

func emit(v interface{}) {
	out, err := json.Marshal(v)
	check(err, "json")
	fmt.Println(string(out))
}

// cosigVerifier checks c2sp.org/tlog-cosignature v1 signatures: the note
// signature is an 8-byte big-endian timestamp and an Ed25519 signature over
// "cosignature/v1\ntime <t>\n" followed by the note text.
type cosigVerifier struct {
	name   string
	hash   uint32
	key    ed25519.PublicKey
	stamps map[string]uint64
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }
func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	t := binary.BigEndian.Uint64(sig[:8])
	if t>>63 != 0 {
		return false
	}
	signed := append([]byte(fmt.Sprintf("cosignature/v1\ntime %d\n", t)), msg...)
	if !ed25519.Verify(v.key, signed, sig[8:]) {
		return false
	}
	v.stamps[v.name] = t
	return true
}

func parseCosigVkey(vkey string, stamps map[string]uint64) (note.Verifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 || len(parts[1]) != 8 {
		return nil, fmt.Errorf("malformed vkey %q", vkey)
	}
	hash, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(key) != 33 || key[0] != 4 {
		return nil, fmt.Errorf("not a cosignature/v1 vkey %q", vkey)
	}
	sum := sha256.Sum256(append([]byte(parts[0]+"\n"), key...))
	if binary.BigEndian.Uint32(sum[:4]) != uint32(hash) {
		return nil, fmt.Errorf("key ID mismatch in %q", vkey)
	}
	return &cosigVerifier{name: parts[0], hash: uint32(hash), key: ed25519.PublicKey(key[1:]), stamps: stamps}, nil
}

func verifiers(vkeys []string, stamps map[string]uint64) note.Verifiers {
	var list []note.Verifier
	for _, vkey := range vkeys {
		parts := strings.SplitN(vkey, "+", 3)
		if len(parts) != 3 {
			fail("malformed vkey %q", vkey)
		}
		key, err := base64.StdEncoding.DecodeString(parts[2])
		check(err, "vkey base64")
		if len(key) > 0 && key[0] == 4 {
			v, err := parseCosigVkey(vkey, stamps)
			check(err, "cosignature vkey")
			list = append(list, v)
			continue
		}
		v, err := note.NewVerifier(vkey)
		check(err, "note.NewVerifier")
		list = append(list, v)
	}
	return note.VerifierList(list...)
}

type checkpoint struct {
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	Root   string `json:"root"`
}

func parseCheckpoint(text string) checkpoint {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 || lines[0] == "" {
		fail("checkpoint has fewer than three lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		fail("bad tree size %q", lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	check(err, "root hash")
	return checkpoint{Origin: lines[0], Size: size, Root: root.String()}
}

func openCheckpoint(data []byte, vkeys []string) (*note.Note, checkpoint) {
	n, err := note.Open(data, verifiers(vkeys, map[string]uint64{}))
	check(err, "note.Open")
	cp := parseCheckpoint(n.Text)
	if n.Sigs[0].Name != cp.Origin {
		fail("log key %q is not origin %q", n.Sigs[0].Name, cp.Origin)
	}
	return n, cp
}

func hashes(lines []string) []tlog.Hash {
	var out []tlog.Hash
	for _, line := range lines {
		h, err := tlog.ParseHash(line)
		check(err, "proof hash")
		out = append(out, h)
	}
	return out
}

// dirTiles serves tiles from the C2SP layout: tile/<L>/<N>[.p/<W>], no height element.
type dirTiles struct{ dir string }

func (d dirTiles) Height() int { return 8 }
func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	var out [][]byte
	for _, t := range tiles {
		rel := strings.Replace(t.Path(), "tile/8/", "tile/", 1)
		data, err := os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(rel)))
		if err != nil {
			return nil, err
		}
		out = append(out, data)
	}
	return out, nil
}
func (d dirTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func main() {
	if len(os.Args) < 2 {
		fail("usage: go_tlog note|checkpoint|inclusion|consistency|tiles ...")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var vkeys multi
	fs.Var(&vkeys, "vkey", "verifier key (repeatable)")
	noteFile := fs.String("note", "", "signed note file")
	proofFile := fs.String("proof", "", "tlog-proof file")
	entryFile := fs.String("entry", "", "entry bytes file")
	oldFile := fs.String("old", "", "older signed checkpoint")
	newFile := fs.String("new", "", "newer signed checkpoint")
	hashFile := fs.String("hashes", "", "consistency proof, one base64 hash a line")
	dir := fs.String("dir", "", "tile directory")
	size := fs.Int64("size", 0, "tree size")
	root := fs.String("root", "", "base64 root hash")
	index := fs.Int64("index", 0, "leaf index")
	check(fs.Parse(os.Args[2:]), "flags")

	switch mode {
	case "note":
		stamps := map[string]uint64{}
		n, err := note.Open(read(*noteFile), verifiers(vkeys, stamps))
		check(err, "note.Open")
		var names []string
		for _, s := range n.Sigs {
			names = append(names, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		emit(map[string]interface{}{"text": n.Text, "verified": names, "cosignature_times": stamps, "unverified": len(n.UnverifiedSigs)})
	case "checkpoint":
		_, cp := openCheckpoint(read(*noteFile), vkeys)
		emit(cp)
	case "inclusion":
		data := read(*proofFile)
		split := bytes.Index(data, []byte("\n\n"))
		if split < 0 {
			fail("no blank line in proof")
		}
		lines := strings.Split(string(data[:split]), "\n")
		if lines[0] != "c2sp.org/tlog-proof@v1" {
			fail("bad header %q", lines[0])
		}
		lines = lines[1:]
		if strings.HasPrefix(lines[0], "extra ") {
			lines = lines[1:]
		}
		idx, err := strconv.ParseInt(strings.TrimPrefix(lines[0], "index "), 10, 64)
		check(err, "index")
		_, cp := openCheckpoint(data[split+2:], vkeys)
		th, err := tlog.ParseHash(cp.Root)
		check(err, "root")
		err = tlog.CheckRecord(tlog.RecordProof(hashes(lines[1:])), cp.Size, th, idx, tlog.RecordHash(read(*entryFile)))
		check(err, "tlog.CheckRecord")
		emit(map[string]interface{}{"index": idx, "size": cp.Size, "root": cp.Root})
	case "consistency":
		_, old := openCheckpoint(read(*oldFile), vkeys)
		_, cur := openCheckpoint(read(*newFile), vkeys)
		oldHash, _ := tlog.ParseHash(old.Root)
		newHash, _ := tlog.ParseHash(cur.Root)
		text := strings.TrimSpace(string(read(*hashFile)))
		var lines []string
		if text != "" {
			lines = strings.Split(text, "\n")
		}
		err := tlog.CheckTree(tlog.TreeProof(hashes(lines)), cur.Size, newHash, old.Size, oldHash)
		check(err, "tlog.CheckTree")
		emit(map[string]interface{}{"old": old.Size, "new": cur.Size})
	case "tiles":
		th, err := tlog.ParseHash(*root)
		check(err, "root")
		reader := tlog.TileHashReader(tlog.Tree{N: *size, Hash: th}, dirTiles{*dir})
		got, err := tlog.TreeHash(*size, reader)
		check(err, "tlog.TreeHash")
		proof, err := tlog.ProveRecord(*size, *index, reader)
		check(err, "tlog.ProveRecord")
		var out []string
		for _, h := range proof {
			out = append(out, h.String())
		}
		emit(map[string]interface{}{"root": got.String(), "inclusion": out})
	default:
		fail("unknown mode %q", mode)
	}
}
