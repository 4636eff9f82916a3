package caddymodule

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
	"time"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/s360"
)

// fieldDoc is the doc comment of Handler's field name in module.go, on
// one line.
func fieldDoc(t *testing.T, name string) string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "module.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var doc string
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok && ts.Name.Name == "Handler" {
			for _, fl := range ts.Type.(*ast.StructType).Fields.List {
				if len(fl.Names) == 1 && fl.Names[0].Name == name {
					doc = strings.Join(strings.Fields(fl.Doc.Text()), " ")
				}
			}
		}
		return true
	})
	if doc == "" {
		t.Fatalf("no doc comment on Handler.%s", name)
	}
	return doc
}

// short writes d as the Caddyfile does: 10m, 1h, 24h.
func short(d time.Duration) string {
	s := strings.TrimSuffix(d.String(), "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// documents says whether doc gives name's default d: as "name d", or as
// its service's "service/* d".
func documents(doc, name string, d time.Duration) bool {
	svc, _, _ := strings.Cut(name, "/")
	return strings.Contains(doc, name+" "+short(d)) || strings.Contains(doc, svc+"/* "+short(d))
}

// The godoc of min_interval and max_age lists every default of the tables
// in code (s360.Methods, s360.Services, as the budget and the edge read
// them).
func TestDocumentedDefaultsAreTheTables(t *testing.T) {
	doc := fieldDoc(t, "MinInterval")
	for name, d := range budget.DefaultFloors() {
		if !documents(doc, name, d) {
			t.Errorf("MinInterval's godoc does not give the default %s %s: %q", name, short(d), doc)
		}
	}
	doc = fieldDoc(t, "MaxAge")
	for name, m := range s360.Methods {
		if m.MaxAge > 0 && !documents(doc, name, m.MaxAge) {
			t.Errorf("MaxAge's godoc does not give the default %s %s: %q", name, short(m.MaxAge), doc)
		}
	}
	for svc, m := range s360.Services {
		if m.MaxAge > 0 && !strings.Contains(doc, svc+"/* "+short(m.MaxAge)) {
			t.Errorf("MaxAge's godoc does not give the default %s/* %s: %q", svc, short(m.MaxAge), doc)
		}
	}
}
