// argocd-lua runs ModelDeployment health checks and resource actions the way Argo CD does (see
// vm.go), for the tests in tests/argocd. It reads one JSON request on stdin:
//
//	{"cases": [{"op": "health" | "discovery" | "action", "script": "<lua>", "object": {...},
//	            "openLibs": false}, ...]}
//
// and writes {"results": [...]}, one per case, in order:
//
//	health:    {"health": {"status": "Healthy", "message": "..."}}
//	discovery: {"actions": [{"name": "promote", "disabled": false, ...}, ...]} (sorted by name)
//	action:    {"impacted": [{"operation": "patch", "resource": {...}}],
//	            "patch": {...} | null, "statusPatch": {...} | null}
//	            (patch/statusPatch: the merge patches Argo CD would send for the "patch" result)
//	any:       {"error": "..."} when Argo CD would report an error
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

type request struct {
	Cases []struct {
		Op       string         `json:"op"`
		Script   string         `json:"script"`
		Object   map[string]any `json:"object"`
		OpenLibs bool           `json:"openLibs"`
	} `json:"cases"`
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua: reading the request:", err)
		os.Exit(2)
	}
	results := make([]map[string]any, 0, len(req.Cases))
	for _, c := range req.Cases {
		results = append(results, run(c.Op, c.Script, c.Object, c.OpenLibs))
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	if err := out.Encode(map[string]any{"results": results}); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(2)
	}
}

func run(op, script string, object map[string]any, openLibs bool) map[string]any {
	vm := VM{UseOpenLibs: openLibs}
	fail := func(err error) map[string]any { return map[string]any{"error": err.Error()} }
	switch op {
	case "health":
		status, err := vm.ExecuteHealthLua(object, script)
		if err != nil {
			return fail(err)
		}
		return map[string]any{"health": status}
	case "discovery":
		actions, err := vm.ExecuteResourceActionDiscovery(object, script)
		if err != nil {
			return fail(err)
		}
		return map[string]any{"actions": actions}
	case "action":
		// The live object is decoded again for the patch: the action may have changed it in
		// place (cleanReturnedObj writes into the returned object, not the live one).
		live, err := json.Marshal(object)
		if err != nil {
			return fail(err)
		}
		impacted, err := vm.ExecuteResourceAction(object, script)
		if err != nil {
			return fail(err)
		}
		result := map[string]any{"impacted": impacted, "patch": nil, "statusPatch": nil}
		for _, r := range impacted {
			if r.Operation != "patch" {
				continue
			}
			var original map[string]any
			if err := json.Unmarshal(live, &original); err != nil {
				return fail(err)
			}
			patch, statusPatch, err := patches(original, r.Object)
			if err != nil {
				return fail(err)
			}
			result["patch"], result["statusPatch"] = patch, statusPatch
		}
		return result
	}
	return fail(fmt.Errorf("unknown op %q", op))
}
