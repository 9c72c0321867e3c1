package server

import (
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"gpucloud/internal/api"
)

// The OpenAPI document is generated from the route table and the Go types
// by reflection, so it is always the API the server serves.

var (
	openapiOnce sync.Once
	openapiDoc  map[string]any
)

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) error {
	openapiOnce.Do(func() { openapiDoc = buildOpenAPI(s.routeTable()) })
	return writeJSON(w, 200, openapiDoc)
}

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

func buildOpenAPI(routes []route) map[string]any {
	g := &schemaGen{defs: map[string]any{}}
	paths := map[string]any{}
	for _, rt := range routes {
		item, _ := paths[rt.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[rt.path] = item
		}
		op := map[string]any{
			"summary":     rt.summary,
			"operationId": operationID(rt),
			"responses": map[string]any{
				"default": map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(api.ErrorResponse{}))}}},
			},
		}
		okResp := map[string]any{"description": "success"}
		if rt.resp != nil {
			ct := "application/json"
			if rt.stream {
				ct = "text/event-stream"
			}
			okResp["content"] = map[string]any{ct: map[string]any{"schema": g.schema(reflect.TypeOf(rt.resp))}}
		} else if rt.stream {
			okResp["content"] = map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}
		}
		op["responses"].(map[string]any)["200"] = okResp
		if rt.req != nil {
			sch := g.schema(reflect.TypeOf(rt.req))
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/json": map[string]any{"schema": sch},
				"application/yaml": map[string]any{"schema": sch},
			}}
		}
		var params []any
		for _, m := range pathParam.FindAllStringSubmatch(rt.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		if rt.access != accessPublic {
			op["security"] = []any{map[string]any{"bearer": []any{}}}
		}
		item[strings.ToLower(rt.method)] = op
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]any{"title": "gpucloud API", "version": api.Version},
		"paths":   paths,
		"components": map[string]any{
			"schemas":         g.defs,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
	}
}

func operationID(rt route) string {
	parts := []string{strings.ToLower(rt.method)}
	for _, p := range strings.Split(rt.path, "/") {
		if p == "" || p == "v1" {
			continue
		}
		p = strings.Trim(p, "{}")
		parts = append(parts, strings.ToUpper(p[:1])+p[1:])
	}
	return strings.Join(parts, "")
}

type schemaGen struct{ defs map[string]any }

var timeType = reflect.TypeOf(time.Time{})
var durationType = reflect.TypeOf(api.Duration(0))

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == durationType:
		return map[string]any{"type": "string", "example": "2h30m"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint8, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float64, reflect.Float32:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return map[string]any{"type": "string", "format": "byte"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Struct:
		name := strings.NewReplacer("[", "_", "]", "", "*", "", ".", "_", "/", "_").Replace(t.Name())
		ref := map[string]any{"$ref": "#/components/schemas/" + name}
		if _, ok := g.defs[name]; ok {
			return ref
		}
		g.defs[name] = map[string]any{} // placeholder against recursion
		props := map[string]any{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			jn := f.Name
			if tag, ok := f.Tag.Lookup("json"); ok {
				n, _, _ := strings.Cut(tag, ",")
				if n == "-" {
					continue
				}
				if n != "" {
					jn = n
				}
			}
			props[jn] = g.schema(f.Type)
		}
		g.defs[name] = map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		return ref
	}
	return map[string]any{}
}
