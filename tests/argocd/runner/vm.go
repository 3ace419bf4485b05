// How Argo CD runs a resource customization's Lua, ported from Argo CD v3.5.1, util/lua/lua.go
// (github.com/argoproj/argo-cd, Apache License 2.0), with Argo CD's own types replaced by plain
// maps: the same gopher-lua state (standard libraries off unless useOpenLibs; package, base,
// table and the safe os opened), the same 1 s deadline, `obj` decoded the same way, and the
// script's result encoded and interpreted the same way for health checks, action discovery and
// actions — including the clean-up of empty tables and the merge patch Argo CD's API server
// sends for an action (server/application/application.go, patchResource).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	jsonpatch "github.com/evanphx/json-patch"
	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

const (
	incorrectReturnType = "expect %s output from Lua script, not %s"
	invalidHealthStatus = "Lua returned an invalid health status"
)

// HealthStatus is gitops-engine's health.HealthStatus.
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

// ResourceAction is Argo CD's v1alpha1.ResourceAction.
type ResourceAction struct {
	Name        string `json:"name,omitempty"`
	Disabled    bool   `json:"disabled,omitempty"`
	IconClass   string `json:"iconClass,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
}

// ImpactedResource is Argo CD's lua.ImpactedResource.
type ImpactedResource struct {
	Object    map[string]any `json:"resource"`
	Operation string         `json:"operation"`
}

type VM struct{ UseOpenLibs bool }

func (vm VM) runLua(obj map[string]any, script string) (*lua.LState, error) {
	l := lua.NewState(lua.Options{
		SkipOpenLibs: !vm.UseOpenLibs,
	})
	defer l.Close()
	// Opens table library to allow access to functions to manipulate tables
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		// load our 'safe' version of the OS library
		{lua.OsLibName, OpenSafeOs},
	} {
		if err := l.CallByParam(lua.P{
			Fn:      l.NewFunction(pair.f),
			NRet:    0,
			Protect: true,
		}, lua.LString(pair.n)); err != nil {
			panic(err)
		}
	}
	// preload our 'safe' version of the OS library. Allows the 'local os = require("os")' to work
	l.PreloadModule(lua.OsLibName, SafeOsLoader)

	ctx, cancel := context.WithTimeout(context.Background(), 1*time.Second)
	defer cancel()
	l.SetContext(ctx)

	// Action parameters: none here, but the global exists as in Argo CD.
	l.SetGlobal("actionParams", l.CreateTable(0, 0))

	objectValue := decodeValue(l, obj)
	l.SetGlobal("obj", objectValue)
	err := l.DoString(script)

	// Remove the default lua stack trace from execution errors since these
	// errors will make it back to the user
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) {
		if apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
			err = apiErr
		}
	}
	return l, err
}

// ExecuteHealthLua runs the lua script to generate the health status of a resource
func (vm VM) ExecuteHealthLua(obj map[string]any, script string) (*HealthStatus, error) {
	l, err := vm.runLua(obj, script)
	if err != nil {
		return nil, err
	}
	returnValue := l.Get(-1)
	if returnValue.Type() == lua.LTTable {
		jsonBytes, err := luajson.Encode(returnValue)
		if err != nil {
			return nil, err
		}
		healthStatus := &HealthStatus{}
		err = json.Unmarshal(jsonBytes, healthStatus)
		if err != nil {
			// Validate if the error is caused by an empty object
			var typeError *json.UnmarshalTypeError
			if errors.As(err, &typeError) {
				return &HealthStatus{}, nil
			}
			return nil, err
		}
		if !isValidHealthStatusCode(healthStatus.Status) {
			return &HealthStatus{Status: "Unknown", Message: invalidHealthStatus}, nil
		}
		return healthStatus, nil
	} else if returnValue.Type() == lua.LTNil {
		return &HealthStatus{}, nil
	}
	return nil, fmt.Errorf(incorrectReturnType, "table", returnValue.Type().String())
}

func isValidHealthStatusCode(status string) bool {
	switch status {
	case "Unknown", "Progressing", "Suspended", "Healthy", "Degraded", "Missing":
		return true
	}
	return false
}

func (vm VM) ExecuteResourceAction(obj map[string]any, script string) ([]ImpactedResource, error) {
	l, err := vm.runLua(obj, script)
	if err != nil {
		return nil, err
	}
	returnValue := l.Get(-1)
	if returnValue.Type() != lua.LTTable {
		return nil, fmt.Errorf(incorrectReturnType, "table", returnValue.Type().String())
	}
	jsonBytes, err := luajson.Encode(returnValue)
	if err != nil {
		return nil, err
	}
	jsonString := bytes.NewBuffer(jsonBytes).String()
	if len(jsonString) < 2 {
		return nil, errors.New("Lua output was not a valid json object or array")
	}
	var impacted []ImpactedResource
	if jsonString[0] == '[' && jsonString[len(jsonString)-1] == ']' {
		// new-style action output: a list of {operation, resource}
		if err := json.Unmarshal(jsonBytes, &impacted); err != nil {
			return nil, err
		}
		for _, r := range impacted {
			if r.Operation != "create" && r.Operation != "patch" {
				return nil, fmt.Errorf("unsupported operation: %q", r.Operation)
			}
		}
	} else {
		// old-style action output: the modified object, patched
		newObj := map[string]any{}
		if err := json.Unmarshal(jsonBytes, &newObj); err != nil {
			return nil, err
		}
		impacted = append(impacted, ImpactedResource{newObj, "patch"})
	}
	for i := range impacted {
		// Cleaning the resource is only relevant to "patch"
		if impacted[i].Operation == "patch" {
			impacted[i].Object = cleanReturnedObj(impacted[i].Object, obj)
		}
	}
	return impacted, nil
}

// cleanReturnedObj Lua cannot distinguish an empty table as an array or map, and the library we are using choose to
// decoded an empty table into an empty array. This function prevents the lua scripts from unintentionally changing an
// empty struct into empty arrays
func cleanReturnedObj(newObj, obj map[string]any) map[string]any {
	mapToReturn := newObj
	for key := range obj {
		if newValueInterface, ok := newObj[key]; ok {
			oldValueInterface, ok := obj[key]
			if !ok {
				continue
			}
			switch newValue := newValueInterface.(type) {
			case map[string]any:
				if oldValue, ok := oldValueInterface.(map[string]any); ok {
					convertedMap := cleanReturnedObj(newValue, oldValue)
					mapToReturn[key] = convertedMap
				}
			case []any:
				switch oldValue := oldValueInterface.(type) {
				case map[string]any:
					if len(newValue) == 0 {
						// Lua incorrectly decoded the empty object as an empty array, so set it to an empty object
						mapToReturn[key] = map[string]any{}
					}
				case []any:
					newArray := cleanReturnedArray(newValue, oldValue)
					mapToReturn[key] = newArray
				}
			}
		}
	}
	return mapToReturn
}

// cleanReturnedArray allows Argo CD to recurse into nested arrays when checking for unintentional empty struct to
// empty array conversions.
func cleanReturnedArray(newObj, obj []any) []any {
	arrayToReturn := newObj
	for i := range newObj {
		if i >= len(obj) {
			// If the new object is longer than the old one, we added an item to the array
			break
		}
		switch newValue := newObj[i].(type) {
		case map[string]any:
			if oldValue, ok := obj[i].(map[string]any); ok {
				convertedMap := cleanReturnedObj(newValue, oldValue)
				arrayToReturn[i] = convertedMap
			}
		case []any:
			if oldValue, ok := obj[i].([]any); ok {
				convertedMap := cleanReturnedArray(newValue, oldValue)
				arrayToReturn[i] = convertedMap
			}
		}
	}
	return arrayToReturn
}

func (vm VM) ExecuteResourceActionDiscovery(obj map[string]any, script string) ([]ResourceAction, error) {
	l, err := vm.runLua(obj, script)
	if err != nil {
		return nil, err
	}
	returnValue := l.Get(-1)
	if returnValue.Type() != lua.LTTable {
		return nil, fmt.Errorf(incorrectReturnType, "table", returnValue.Type().String())
	}
	jsonBytes, err := luajson.Encode(returnValue)
	if err != nil {
		return nil, fmt.Errorf("error in converting to lua table: %w", err)
	}
	available := []ResourceAction{}
	if string(jsonBytes) == "[]" { // an empty table: no actions
		return available, nil
	}
	actionsMap := make(map[string]any)
	if err := json.Unmarshal(jsonBytes, &actionsMap); err != nil {
		return nil, fmt.Errorf("error unmarshaling action table: %w", err)
	}
	for key, value := range actionsMap {
		action := ResourceAction{Name: key, Disabled: isActionDisabled(value)}
		if _, empty := value.([]any); !empty {
			raw, err := json.Marshal(value)
			if err != nil {
				return nil, fmt.Errorf("error marshaling resource action: %w", err)
			}
			if err := json.Unmarshal(raw, &action); err != nil {
				return nil, fmt.Errorf("error unmarshaling resource action: %w", err)
			}
		}
		available = append(available, action)
	}
	sort.Slice(available, func(i, j int) bool { return available[i].Name < available[j].Name })
	return available, nil
}

// Actions are enabled by default
func isActionDisabled(actionsMap any) bool {
	actions, ok := actionsMap.(map[string]any)
	if !ok {
		return false
	}
	for key, val := range actions {
		if vv, ok := val.(bool); ok {
			if key == "disabled" {
				return vv
			}
		}
	}
	return false
}

// patches is what Argo CD's API server sends for a "patch" result: a JSON merge patch of the
// live object, split into the status subresource's part and the rest (nil when empty).
func patches(live, modified map[string]any) (nonStatus, status map[string]any, err error) {
	liveBytes, err := json.Marshal(live)
	if err != nil {
		return nil, nil, err
	}
	newBytes, err := json.Marshal(modified)
	if err != nil {
		return nil, nil, err
	}
	diffBytes, err := jsonpatch.CreateMergePatch(liveBytes, newBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("error calculating merge patch: %w", err)
	}
	diff := map[string]any{}
	if err := json.Unmarshal(diffBytes, &diff); err != nil {
		return nil, nil, err
	}
	if value, ok := diff["status"]; ok {
		status = map[string]any{"status": value}
		delete(diff, "status")
	}
	if len(diff) > 0 {
		nonStatus = diff
	}
	return nonStatus, status, nil
}

// Took logic from the link below and added the int, int32, and int64 types since the value would have type int64
// while actually running in the controller and it was not reproducible through testing.
// https://github.com/layeh/gopher-json/blob/97fed8db84274c421dbfffbb28ec859901556b97/json.go#L154
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	case nil:
		return lua.LNil
	}
	return lua.LNil
}
