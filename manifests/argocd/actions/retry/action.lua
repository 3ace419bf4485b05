-- modeldeploy.io/retry: try rejected revisions again (as a new spec.rollout.retry would, without a commit).
-- A one-shot request: the operator acts on a value it has not acknowledged yet (status.actions.retry),
-- so each run writes a fresh one, the current time. Argo CD's sandbox has no global os, but
-- require("os") gives os.date.
local os = require("os")
local token = os.date("!%Y-%m-%dT%H:%M:%SZ")
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
if obj.metadata.annotations["modeldeploy.io/retry"] == token then
  token = token .. "#2" -- asked twice within a second: still a new request
end
obj.metadata.annotations["modeldeploy.io/retry"] = token
return obj
