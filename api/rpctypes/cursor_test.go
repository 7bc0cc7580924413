package rpctypes

import (
	"maps"
	"strings"
	"testing"
)

func TestWatchCursor_ParseAndString(t *testing.T) {
	tests := []struct {
		in      string
		want    WatchCursor
		text    string // String of the parsed cursor
		wantErr string
	}{
		{in: "", want: WatchCursor{}, text: ""},
		{in: "7:120", want: WatchCursor{7: 120}, text: "7:120"},
		{in: "9:44,7:120", want: WatchCursor{7: 120, 9: 44}, text: "7:120,9:44"},
		{in: "3:0,2:5", want: WatchCursor{2: 5, 3: 0}, text: "2:5,3:0"}, // a 0 entry is kept
		{in: "7", wantErr: "want RANGE:INDEX"},
		{in: "7:x", wantErr: "unsigned decimal"},
		{in: "0:5", wantErr: "not 0"},
		{in: "-1:5", wantErr: "unsigned decimal"},
		{in: "7:1,7:2", wantErr: "twice"},
		{in: "7:1,", wantErr: "want RANGE:INDEX"},
	}
	for _, tt := range tests {
		got, err := ParseWatchCursor(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseWatchCursor(%q) = %v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tt.want) {
			t.Errorf("ParseWatchCursor(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.text {
			t.Errorf("ParseWatchCursor(%q).String() = %q; want %q", tt.in, s, tt.text)
		}
	}
}

func TestWatchCursor_RefusesTooManyRanges(t *testing.T) {
	c := WatchCursor{}
	for i := uint64(1); i <= maxCursorEntries+1; i++ {
		c[i] = i
	}
	if _, err := ParseWatchCursor(c.String()); err == nil {
		t.Fatalf("a cursor of %d ranges parsed", len(c))
	}
}
