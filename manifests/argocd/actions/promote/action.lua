-- modeldeploy.io/promote: promote the canary now, skipping its remaining steps.
-- A one-shot request: the operator acts on a value it has not acknowledged yet (status.actions.promote),
-- so each run writes a fresh one, the current time. Argo CD's sandbox has no global os, but
-- require("os") gives os.date.
local os = require("os")
local token = os.date("!%Y-%m-%dT%H:%M:%SZ")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
if obj.metadata.annotations["modeldeploy.io/promote"] == token then
  token = token .. "#2" -- asked twice within a second: still a new request
end
obj.metadata.annotations["modeldeploy.io/promote"] = token
return obj
