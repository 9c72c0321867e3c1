package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Decode reads a JSON or YAML document into v, strictly: unknown fields
// and values of the wrong type are errors that name the field
// ("spec.replica: unknown field"). YAML goes through the same JSON tags, so
// both forms accept exactly the same documents.
func Decode(data []byte, v any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return &ValidationError{Fields: []FieldError{{Field: "(body)", Message: "empty document"}}}
	}
	var generic any
	if trimmed[0] == '{' || trimmed[0] == '[' {
		d := json.NewDecoder(bytes.NewReader(trimmed))
		d.UseNumber()
		if err := d.Decode(&generic); err != nil {
			return &ValidationError{Fields: []FieldError{{Field: "(body)", Message: "invalid JSON: " + err.Error()}}}
		}
		if d.More() {
			return &ValidationError{Fields: []FieldError{{Field: "(body)", Message: "trailing data after the JSON document"}}}
		}
	} else {
		if err := yaml.Unmarshal(trimmed, &generic); err != nil {
			return &ValidationError{Fields: []FieldError{{Field: "(body)", Message: "invalid YAML: " + err.Error()}}}
		}
		var err error
		if generic, err = stringKeys(generic, ""); err != nil {
			return err
		}
		b, err := json.Marshal(generic)
		if err != nil {
			return &ValidationError{Fields: []FieldError{{Field: "(body)", Message: err.Error()}}}
		}
		trimmed = b
	}
	var e errs
	unknownFields(&e, generic, reflect.TypeOf(v).Elem(), "")
	if err := e.err(); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(trimmed))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if field == "" {
				field = "(body)"
			}
			return &ValidationError{Fields: []FieldError{{Field: field, Message: fmt.Sprintf("want %s, got %s", kindName(te.Type), te.Value)}}}
		}
		return &ValidationError{Fields: []FieldError{{Field: fieldOf(err), Message: err.Error()}}}
	}
	return nil
}

// fieldOf digs the field out of errors from custom unmarshalers
// ("json: ... Go struct field JobSpec.spec.estimatedRuntime ...").
func fieldOf(err error) string {
	s := err.Error()
	if i := strings.Index(s, "Go struct field "); i >= 0 {
		rest := s[i+len("Go struct field "):]
		if j := strings.IndexByte(rest, ' '); j >= 0 {
			rest = rest[:j]
		}
		if k := strings.IndexByte(rest, '.'); k >= 0 {
			return rest[k+1:]
		}
		return rest
	}
	return "(body)"
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint64:
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

// stringKeys turns YAML's maps into JSON-compatible ones.
func stringKeys(v any, path string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			c, err := stringKeys(e, join(path, k))
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			ks := fmt.Sprint(k)
			c, err := stringKeys(e, join(path, ks))
			if err != nil {
				return nil, err
			}
			m[ks] = c
		}
		return m, nil
	case []any:
		for i, e := range x {
			c, err := stringKeys(e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	}
	return v, nil
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// unknownFields walks a decoded document against the Go type and reports
// every key that has no field, with its path.
func unknownFields(e *errs, v any, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// Custom types (durations) check their own values; their errors
		// get the path here, which encoding/json would not give them.
		b, _ := json.Marshal(v)
		if err := json.Unmarshal(b, reflect.New(t).Interface()); err != nil {
			e.add(path, "%s", err.Error())
		}
		return
	}
	switch x := v.(type) {
	case map[string]any:
		switch t.Kind() {
		case reflect.Struct:
			fields := jsonFields(t)
			for k, sub := range x {
				ft, ok := fields[k]
				if !ok {
					e.add(join(path, k), "unknown field")
					continue
				}
				unknownFields(e, sub, ft, join(path, k))
			}
		case reflect.Map:
			for k, sub := range x {
				unknownFields(e, sub, t.Elem(), join(path, k))
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, sub := range x {
				unknownFields(e, sub, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
}

var unmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

func jsonFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		m[name] = f.Type
	}
	fieldCache.Store(t, m)
	return m
}

// DecodeJob reads and validates a job document (YAML or JSON).
func DecodeJob(data []byte) (*Job, error) {
	var j Job
	if err := Decode(data, &j); err != nil {
		return nil, err
	}
	DefaultJob(&j)
	if err := ValidateJob(&j); err != nil {
		return nil, err
	}
	return &j, nil
}
