package main

// The driver's state: volumes and snapshots are directories below a state
// directory, their metadata one JSON file written atomically.
//
//	<dir>/state.json            {"volumes": {...}, "snapshots": {...}}
//	<dir>/volumes/<id>/         a volume's content (what a pod mounts)
//	<dir>/snapshots/<id>/       a snapshot: a full copy (cp -a) of a volume
//	<dir>/{volumes,snapshots}/.tmp-*   work in progress, removed on open
//
// Every change follows one order, so a crash leaves nothing a caller was
// told about half done: copy into a .tmp- directory, rename it into place,
// then record it in state.json (a directory without a record is replaced by
// the next create of that name); a delete renames the directory to .tmp-,
// removes the record, then the directory. Copies run outside the lock (Store).

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists with other parameters")
	ErrOutOfRange    = errors.New("capacity smaller than the source")
	ErrBusy          = errors.New("an operation on it is in progress")
)

type Volume struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	CapacityBytes int64  `json:"capacityBytes"`
	// At most one of these: the volume was made as a copy of that snapshot or volume.
	SourceSnapshotID string    `json:"sourceSnapshotId,omitempty"`
	SourceVolumeID   string    `json:"sourceVolumeId,omitempty"`
	CreatedAt        time.Time `json:"createdAt"`
}

type Snapshot struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	SourceVolumeID string `json:"sourceVolumeId"`
	// The source volume's capacity: the smallest volume it can be restored to.
	SizeBytes int64     `json:"sizeBytes"`
	CreatedAt time.Time `json:"createdAt"`
}

// Source of a new volume: empty, a snapshot, or another volume (a clone).
type Source struct {
	SnapshotID string
	VolumeID   string
}

type state struct {
	Volumes   map[string]*Volume   `json:"volumes"`
	Snapshots map[string]*Snapshot `json:"snapshots"`
}

// Store: one mutex guards the state; copies run without it, so a long
// snapshot does not hold up other calls. While a copy runs, its target is
// "being made" (a second create of that name gets ErrBusy) and its source
// "being read" (deleting the source gets ErrBusy): the CO retries both.
type Store struct {
	dir     string
	mu      sync.Mutex
	st      state
	making  map[string]bool // "v/ID", "s/ID"
	reading map[string]int
	now     func() time.Time
	// copyTree copies a directory tree (a stub in tests).
	copyTree func(src, dst string) error
}

const tmpPrefix = ".tmp-"

func OpenStore(dir string) (*Store, error) {
	s := &Store{dir: dir, now: time.Now, copyTree: copyTree, making: map[string]bool{}, reading: map[string]int{}}
	for _, d := range []string{s.volumesDir(), s.snapshotsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
					return nil, err
				}
			}
		}
	}
	data, err := os.ReadFile(s.statePath())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(data, &s.st); err != nil {
			return nil, fmt.Errorf("%s: %w", s.statePath(), err)
		}
	}
	if s.st.Volumes == nil {
		s.st.Volumes = map[string]*Volume{}
	}
	if s.st.Snapshots == nil {
		s.st.Snapshots = map[string]*Snapshot{}
	}
	return s, nil
}

func (s *Store) statePath() string    { return filepath.Join(s.dir, "state.json") }
func (s *Store) volumesDir() string   { return filepath.Join(s.dir, "volumes") }
func (s *Store) snapshotsDir() string { return filepath.Join(s.dir, "snapshots") }

// VolumePath is the directory holding a volume's content.
func (s *Store) VolumePath(id string) string   { return filepath.Join(s.volumesDir(), id) }
func (s *Store) SnapshotPath(id string) string { return filepath.Join(s.snapshotsDir(), id) }

var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// idFor maps a CO-chosen name (the idempotency key) to an ID that is also a
// directory name: the name itself when it is a plain path component (as
// Kubernetes' pvc-<uid> and snapshot-<uid> are), else a hash of it.
func idFor(name string) string {
	if safeID.MatchString(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "h-" + hex.EncodeToString(sum[:16])
}

func (s *Store) GetVolume(id string) (Volume, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.st.Volumes[id]
	if !ok {
		return Volume{}, false
	}
	return *v, true
}

func (s *Store) GetSnapshot(id string) (Snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn, ok := s.st.Snapshots[id]
	if !ok {
		return Snapshot{}, false
	}
	return *sn, true
}

// CreateVolume makes (or, for the same name and parameters, returns) a volume.
func (s *Store) CreateVolume(name string, capacity int64, src Source) (Volume, error) {
	id := idFor(name)
	s.mu.Lock()
	if v, ok := s.st.Volumes[id]; ok {
		s.mu.Unlock()
		if v.Name != name || v.CapacityBytes != capacity || v.SourceSnapshotID != src.SnapshotID || v.SourceVolumeID != src.VolumeID {
			return Volume{}, fmt.Errorf("volume %q: %w", name, ErrAlreadyExists)
		}
		return *v, nil
	}
	var from, source string
	switch {
	case src.SnapshotID != "" && src.VolumeID != "":
		s.mu.Unlock()
		return Volume{}, errors.New("a volume has one source, a snapshot or a volume")
	case src.SnapshotID != "":
		sn, ok := s.st.Snapshots[src.SnapshotID]
		if !ok {
			s.mu.Unlock()
			return Volume{}, fmt.Errorf("snapshot %q: %w", src.SnapshotID, ErrNotFound)
		}
		if capacity < sn.SizeBytes {
			s.mu.Unlock()
			return Volume{}, fmt.Errorf("volume %q of %d bytes from snapshot %q of %d: %w", name, capacity, sn.ID, sn.SizeBytes, ErrOutOfRange)
		}
		from, source = s.SnapshotPath(sn.ID), "s/"+sn.ID
	case src.VolumeID != "":
		sv, ok := s.st.Volumes[src.VolumeID]
		if !ok {
			s.mu.Unlock()
			return Volume{}, fmt.Errorf("volume %q: %w", src.VolumeID, ErrNotFound)
		}
		if capacity < sv.CapacityBytes {
			s.mu.Unlock()
			return Volume{}, fmt.Errorf("volume %q of %d bytes cloned from volume %q of %d: %w", name, capacity, sv.ID, sv.CapacityBytes, ErrOutOfRange)
		}
		from, source = s.VolumePath(sv.ID), "v/"+sv.ID
	}
	if err := s.begin("v/"+id, source); err != nil {
		s.mu.Unlock()
		return Volume{}, fmt.Errorf("volume %q: %w", name, err)
	}
	s.mu.Unlock()
	defer s.end("v/"+id, source)

	// The copy, without the lock: other calls go on meanwhile.
	tmp := filepath.Join(s.volumesDir(), tmpPrefix+id)
	if err := os.RemoveAll(tmp); err != nil {
		return Volume{}, err
	}
	if from != "" {
		if err := s.copyTree(from, tmp); err != nil {
			os.RemoveAll(tmp)
			return Volume{}, err
		}
	} else {
		// World-writable like a fresh hostPath: the kubelet applies a pod's
		// fsGroup to it (CSIDriver fsGroupPolicy File), and a pod without one
		// can still write.
		if err := os.Mkdir(tmp, 0o777); err != nil {
			return Volume{}, err
		}
		if err := os.Chmod(tmp, 0o777); err != nil { // past the umask
			os.RemoveAll(tmp)
			return Volume{}, err
		}
	}
	v := &Volume{ID: id, Name: name, CapacityBytes: capacity, SourceSnapshotID: src.SnapshotID,
		SourceVolumeID: src.VolumeID, CreatedAt: s.now().UTC()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.commit(tmp, s.VolumePath(id), func() { s.st.Volumes[id] = v }, func() { delete(s.st.Volumes, id) }); err != nil {
		return Volume{}, err
	}
	return *v, nil
}

// DeleteVolume removes a volume; an unknown ID is not an error (idempotent).
// Snapshots of it are copies and stay. A volume being copied is busy.
func (s *Store) DeleteVolume(id string) error {
	s.mu.Lock()
	v, ok := s.st.Volumes[id]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	if s.busy("v/" + id) {
		s.mu.Unlock()
		return fmt.Errorf("volume %q: %w", id, ErrBusy)
	}
	aside, err := s.unrecord(s.VolumePath(id), s.volumesDir(), func() { delete(s.st.Volumes, id) }, func() { s.st.Volumes[id] = v })
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return os.RemoveAll(aside)
}

// CreateSnapshot copies a volume (or returns the snapshot of that name of the same volume).
func (s *Store) CreateSnapshot(name, volumeID string) (Snapshot, error) {
	id := idFor(name)
	s.mu.Lock()
	if sn, ok := s.st.Snapshots[id]; ok {
		s.mu.Unlock()
		if sn.Name != name || sn.SourceVolumeID != volumeID {
			return Snapshot{}, fmt.Errorf("snapshot %q: %w", name, ErrAlreadyExists)
		}
		return *sn, nil
	}
	v, ok := s.st.Volumes[volumeID]
	if !ok {
		s.mu.Unlock()
		return Snapshot{}, fmt.Errorf("volume %q: %w", volumeID, ErrNotFound)
	}
	vol := *v
	if err := s.begin("s/"+id, "v/"+vol.ID); err != nil {
		s.mu.Unlock()
		return Snapshot{}, fmt.Errorf("snapshot %q: %w", name, err)
	}
	s.mu.Unlock()
	defer s.end("s/"+id, "v/"+vol.ID)

	tmp := filepath.Join(s.snapshotsDir(), tmpPrefix+id)
	if err := os.RemoveAll(tmp); err != nil {
		return Snapshot{}, err
	}
	if err := s.copyTree(s.VolumePath(vol.ID), tmp); err != nil {
		os.RemoveAll(tmp)
		return Snapshot{}, err
	}
	// Cut when the copy is complete: it holds every write made before now.
	sn := &Snapshot{ID: id, Name: name, SourceVolumeID: vol.ID, SizeBytes: vol.CapacityBytes, CreatedAt: s.now().UTC()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.commit(tmp, s.SnapshotPath(id), func() { s.st.Snapshots[id] = sn }, func() { delete(s.st.Snapshots, id) }); err != nil {
		return Snapshot{}, err
	}
	return *sn, nil
}

// DeleteSnapshot removes a snapshot; an unknown ID is not an error. A
// snapshot being restored from is busy.
func (s *Store) DeleteSnapshot(id string) error {
	s.mu.Lock()
	sn, ok := s.st.Snapshots[id]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	if s.busy("s/" + id) {
		s.mu.Unlock()
		return fmt.Errorf("snapshot %q: %w", id, ErrBusy)
	}
	aside, err := s.unrecord(s.SnapshotPath(id), s.snapshotsDir(), func() { delete(s.st.Snapshots, id) }, func() { s.st.Snapshots[id] = sn })
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return os.RemoveAll(aside)
}

// begin marks target ("v/ID" or "s/ID") as being made and source (if any) as
// being read, unless target is being made already. Called with mu held.
func (s *Store) begin(target, source string) error {
	if s.making[target] {
		return ErrBusy
	}
	s.making[target] = true
	if source != "" {
		s.reading[source]++
	}
	return nil
}

func (s *Store) end(target, source string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.making, target)
	if source != "" {
		if s.reading[source]--; s.reading[source] <= 0 {
			delete(s.reading, source)
		}
	}
}

// busy: a copy reads it. Called with mu held.
func (s *Store) busy(key string) bool { return s.reading[key] > 0 }

// ListSnapshots returns the snapshots, oldest first, filtered by ID and/or
// source volume when those are set.
func (s *Store) ListSnapshots(snapshotID, sourceVolumeID string) []Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Snapshot
	for _, sn := range s.st.Snapshots {
		if (snapshotID == "" || sn.ID == snapshotID) && (sourceVolumeID == "" || sn.SourceVolumeID == sourceVolumeID) {
			out = append(out, *sn)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// commit renames tmp to final (replacing an unrecorded leftover there) and
// records it; on a failed save the record and the directory are undone.
func (s *Store) commit(tmp, final string, record, unrecord func()) error {
	if err := os.RemoveAll(final); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	record()
	if err := s.save(); err != nil {
		unrecord()
		os.RemoveAll(final)
		return err
	}
	return nil
}

// unrecord renames dir aside (a .tmp- name of its own, removed at the next
// open should the caller not get to it) and drops the record; it returns the
// aside path for the caller to delete without the lock.
func (s *Store) unrecord(dir, parent string, unrecord, record func()) (string, error) {
	aside := filepath.Join(parent, fmt.Sprintf("%sdel-%s-%d", tmpPrefix, filepath.Base(dir), s.now().UnixNano()))
	if err := os.Rename(dir, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	unrecord()
	if err := s.save(); err != nil {
		record()
		os.Rename(aside, dir)
		return "", err
	}
	return aside, nil
}

// save writes state.json atomically: a temporary file, fsync, rename, fsync of the directory.
func (s *Store) save() error {
	data, err := json.MarshalIndent(&s.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.statePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, s.statePath()); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// copyTree copies the directory src to dst (which must not exist) with
// everything a database's data directory needs kept: owners, modes,
// timestamps, links, sparse files, xattrs (GNU cp -a). --reflink=auto shares
// the blocks on a filesystem that can (btrfs, XFS), and copies elsewhere.
func copyTree(src, dst string) error {
	out, err := exec.Command("cp", "-a", "--reflink=auto", "--", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, strings.TrimSpace(string(out)))
	}
	return nil
}
