package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// entry: what a copy must keep of a file.
type entry struct {
	Mode     fs.FileMode
	UID, GID uint32
	Content  string // a file's content or a link's target
	Ino      uint64 // rewritten to a per-tree ordinal: hard links share one
}

// tree describes every file below root (root itself as ".").
func tree(t *testing.T, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	inodes := map[uint64]uint64{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st := fi.Sys().(*syscall.Stat_t)
		e := entry{Mode: fi.Mode(), UID: st.Uid, GID: st.Gid}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			e.Content, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.Content = string(b)
			if _, ok := inodes[st.Ino]; !ok {
				inodes[st.Ino] = uint64(len(inodes) + 1)
			}
			e.Ino = inodes[st.Ino]
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fillDataDir writes a small database-like tree: a private directory, files
// of several modes, a symlink, a hard link, owned by uid/gid 999 when root.
func fillDataDir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, "mysql"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "mysql"), 0o700)
	write(t, filepath.Join(dir, "ibdata1"), "innodb pages", 0o660)
	write(t, filepath.Join(dir, "mysql", "user.MAD"), "users", 0o600)
	write(t, filepath.Join(dir, "run.sh"), "#!/bin/sh\n", 0o755)
	if err := os.Symlink("ibdata1", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "ibdata1"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, 999, 999) })
		os.Chmod(dir, 0o750)
	}
}

func TestVolumeCreateIsIdempotentAndPersisted(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	v, err := s.CreateVolume("pvc-1", 5<<20, Source{})
	if err != nil {
		t.Fatal(err)
	}
	if v.ID != "pvc-1" || v.CapacityBytes != 5<<20 {
		t.Fatalf("volume %+v", v)
	}
	fi, err := os.Stat(s.VolumePath(v.ID))
	if err != nil || fi.Mode().Perm() != 0o777 || !fi.IsDir() {
		t.Fatalf("volume directory: %v %v", fi, err)
	}
	again, err := s.CreateVolume("pvc-1", 5<<20, Source{})
	if err != nil || again != v {
		t.Fatalf("second create: %+v %v, want %+v", again, err, v)
	}
	if _, err := s.CreateVolume("pvc-1", 6<<20, Source{}); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("same name, other size: %v", err)
	}
	// The state survives a restart, and is valid JSON with no temporary file left.
	s2 := openStore(t, dir)
	if got, ok := s2.GetVolume("pvc-1"); !ok || got != v {
		t.Fatalf("after reopen: %+v %v", got, ok)
	}
	var st state
	b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if err := json.Unmarshal(b, &st); err != nil || st.Volumes["pvc-1"] == nil {
		t.Fatalf("state.json: %v %s", err, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json.tmp")); !os.IsNotExist(err) {
		t.Fatalf("state.json.tmp left behind: %v", err)
	}
}

func TestIDsAreDirectoryNames(t *testing.T) {
	for _, name := range []string{"pvc-0b7c", "snapshot-9f.1_x"} {
		if idFor(name) != name {
			t.Errorf("idFor(%q) = %q", name, idFor(name))
		}
	}
	for _, name := range []string{"../etc", "a/b", ".hidden", "", strings.Repeat("x", 200), "with space"} {
		id := idFor(name)
		if !strings.HasPrefix(id, "h-") || strings.ContainsAny(id, "/ .") {
			t.Errorf("idFor(%q) = %q", name, id)
		}
	}
}

func TestSnapshotKeepsOwnersModesAndLinks(t *testing.T) {
	s := openStore(t, t.TempDir())
	v, err := s.CreateVolume("pvc-src", 10<<20, Source{})
	if err != nil {
		t.Fatal(err)
	}
	fillDataDir(t, s.VolumePath(v.ID))
	before := tree(t, s.VolumePath(v.ID))
	if os.Geteuid() == 0 && before["ibdata1"].UID != 999 {
		t.Fatalf("setup: %+v", before["ibdata1"])
	}

	sn, err := s.CreateSnapshot("snap-1", v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sn.SizeBytes != v.CapacityBytes || sn.SourceVolumeID != v.ID {
		t.Fatalf("snapshot %+v", sn)
	}
	if again, err := s.CreateSnapshot("snap-1", v.ID); err != nil || again != sn {
		t.Fatalf("second create: %+v %v", again, err)
	}
	if !reflect.DeepEqual(tree(t, s.SnapshotPath(sn.ID)), before) {
		t.Fatalf("snapshot differs from its volume:\n%v\n%v", tree(t, s.SnapshotPath(sn.ID)), before)
	}

	// Writes after the snapshot do not reach it, nor a volume restored from it.
	write(t, filepath.Join(s.VolumePath(v.ID), "ibdata1"), "changed later", 0o660)
	os.Remove(filepath.Join(s.VolumePath(v.ID), "run.sh"))

	r, err := s.CreateVolume("pvc-restored", 10<<20, Source{SnapshotID: sn.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := tree(t, s.VolumePath(r.ID)); !reflect.DeepEqual(got, before) {
		t.Fatalf("restored volume:\n%v\nwant\n%v", got, before)
	}
	if r.SourceSnapshotID != sn.ID {
		t.Fatalf("restored %+v", r)
	}
	// Restoring writes nothing back into the snapshot.
	write(t, filepath.Join(s.VolumePath(r.ID), "new"), "x", 0o600)
	if _, err := os.Stat(filepath.Join(s.SnapshotPath(sn.ID), "new")); !os.IsNotExist(err) {
		t.Fatalf("a write to the restored volume reached the snapshot: %v", err)
	}
}

func TestCreateFromSourcesChecksThem(t *testing.T) {
	s := openStore(t, t.TempDir())
	v, _ := s.CreateVolume("pvc-a", 10<<20, Source{})
	sn, _ := s.CreateSnapshot("snap-a", v.ID)
	if _, err := s.CreateVolume("pvc-small", 1<<20, Source{SnapshotID: sn.ID}); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("smaller than the snapshot: %v", err)
	}
	if _, err := s.CreateVolume("pvc-small", 1<<20, Source{VolumeID: v.ID}); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("smaller than the volume: %v", err)
	}
	if _, err := s.CreateVolume("pvc-x", 10<<20, Source{SnapshotID: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown snapshot: %v", err)
	}
	if _, err := s.CreateVolume("pvc-x", 10<<20, Source{VolumeID: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown volume: %v", err)
	}
	if _, err := s.CreateSnapshot("snap-x", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("snapshot of an unknown volume: %v", err)
	}
	if _, err := s.CreateSnapshot("snap-a", "pvc-other"); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("same snapshot name, other volume: %v", err)
	}
	// Nothing half-made is left by the refusals.
	for _, d := range []string{s.volumesDir(), s.snapshotsDir()} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tmpPrefix) || e.Name() == "pvc-small" || e.Name() == "pvc-x" {
				t.Errorf("left behind: %s/%s", d, e.Name())
			}
		}
	}
}

func TestCloneCopiesTheVolume(t *testing.T) {
	s := openStore(t, t.TempDir())
	v, _ := s.CreateVolume("pvc-a", 10<<20, Source{})
	fillDataDir(t, s.VolumePath(v.ID))
	c, err := s.CreateVolume("pvc-clone", 20<<20, Source{VolumeID: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tree(t, s.VolumePath(c.ID)), tree(t, s.VolumePath(v.ID))) || c.SourceVolumeID != v.ID {
		t.Fatalf("clone %+v differs", c)
	}
}

func TestDeletesAreIdempotentAndSnapshotsOutliveTheirVolume(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	v, _ := s.CreateVolume("pvc-a", 1<<20, Source{})
	write(t, filepath.Join(s.VolumePath(v.ID), "f"), "data", 0o640)
	sn, _ := s.CreateSnapshot("snap-a", v.ID)
	if err := s.DeleteVolume(v.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(v.ID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := os.Stat(s.VolumePath(v.ID)); !os.IsNotExist(err) {
		t.Fatalf("volume directory still there: %v", err)
	}
	r, err := s.CreateVolume("pvc-b", 1<<20, Source{SnapshotID: sn.ID})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(s.VolumePath(r.ID), "f")); string(b) != "data" {
		t.Fatalf("restored after the source's deletion: %q", b)
	}
	if err := s.DeleteSnapshot(sn.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(sn.ID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := os.Stat(s.SnapshotPath(sn.ID)); !os.IsNotExist(err) {
		t.Fatalf("snapshot directory still there: %v", err)
	}
	s2 := openStore(t, dir)
	if _, ok := s2.GetVolume(v.ID); ok {
		t.Fatal("deleted volume back after reopen")
	}
	if len(s2.ListSnapshots("", "")) != 0 {
		t.Fatal("deleted snapshot back after reopen")
	}
}

func TestOpenRemovesWorkInProgressAndCreateReplacesUnrecordedLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	// A crash mid-copy, and one between the rename and the state write.
	os.MkdirAll(filepath.Join(dir, "volumes", ".tmp-pvc-x", "sub"), 0o755)
	os.MkdirAll(filepath.Join(dir, "snapshots", ".tmp-del-snap-y"), 0o755)
	os.MkdirAll(filepath.Join(dir, "volumes", "pvc-z"), 0o755)
	write(t, filepath.Join(dir, "volumes", "pvc-z", "stale"), "old", 0o644)
	_ = s
	s = openStore(t, dir)
	for _, p := range []string{"volumes/.tmp-pvc-x", "snapshots/.tmp-del-snap-y"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s not removed on open: %v", p, err)
		}
	}
	v, err := s.CreateVolume("pvc-z", 1<<20, Source{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.VolumePath(v.ID), "stale")); !os.IsNotExist(err) {
		t.Fatalf("a new volume holds an unrecorded leftover's file: %v", err)
	}
}

func TestListSnapshotsFilters(t *testing.T) {
	s := openStore(t, t.TempDir())
	a, _ := s.CreateVolume("pvc-a", 1<<20, Source{})
	b, _ := s.CreateVolume("pvc-b", 1<<20, Source{})
	s.CreateSnapshot("snap-1", a.ID)
	s.CreateSnapshot("snap-2", b.ID)
	s.CreateSnapshot("snap-3", a.ID)
	ids := func(l []Snapshot) (out []string) {
		for _, sn := range l {
			out = append(out, sn.ID)
		}
		return out
	}
	if got := ids(s.ListSnapshots("", "")); len(got) != 3 {
		t.Fatalf("all: %v", got)
	}
	if got := ids(s.ListSnapshots("", a.ID)); !reflect.DeepEqual(got, []string{"snap-1", "snap-3"}) {
		t.Fatalf("by volume: %v", got)
	}
	if got := ids(s.ListSnapshots("snap-2", "")); !reflect.DeepEqual(got, []string{"snap-2"}) {
		t.Fatalf("by ID: %v", got)
	}
	if got := ids(s.ListSnapshots("snap-2", a.ID)); len(got) != 0 {
		t.Fatalf("by ID and another volume: %v", got)
	}
}

// TestCopiesDoNotHoldUpOtherCalls: a snapshot being copied blocks neither
// lookups nor other volumes; its source cannot be deleted and its name not
// made twice meanwhile (ErrBusy: the CO retries).
func TestCopiesDoNotHoldUpOtherCalls(t *testing.T) {
	s := openStore(t, t.TempDir())
	v, _ := s.CreateVolume("pvc-a", 1<<20, Source{})
	started, release := make(chan struct{}), make(chan struct{})
	s.copyTree = func(src, dst string) error {
		close(started)
		<-release
		return copyTree(src, dst)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.CreateSnapshot("snap-a", v.ID)
		done <- err
	}()
	<-started
	if _, ok := s.GetVolume(v.ID); !ok {
		t.Fatal("GetVolume during the copy")
	}
	if _, err := s.CreateVolume("pvc-b", 1<<20, Source{}); err != nil {
		t.Fatalf("another volume during the copy: %v", err)
	}
	if err := s.DeleteVolume(v.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("deleting the source during the copy: %v", err)
	}
	if _, err := s.CreateSnapshot("snap-a", v.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("the same snapshot again during the copy: %v", err)
	}
	if len(s.ListSnapshots("", "")) != 0 {
		t.Fatal("a snapshot listed before its copy is done")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.copyTree = copyTree
	if _, ok := s.GetSnapshot("snap-a"); !ok {
		t.Fatal("snapshot missing after the copy")
	}
	if err := s.DeleteVolume(v.ID); err != nil {
		t.Fatalf("deleting the source after the copy: %v", err)
	}
}
