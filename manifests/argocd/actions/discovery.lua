-- Argo CD resource actions for modeldeploy.io/ModelDeployment: each one sets an annotation the
-- operator acts on (operator/modeldeploy/actions.py) and acknowledges in status.actions; spec,
-- which Git owns, is never touched.
local actions = {}
local status = obj.status
if status == nil then
  status = {}
end
local annotations = obj.metadata.annotations
if annotations == nil then
  annotations = {}
end
local value = annotations["modeldeploy.io/paused"]
local paused = value == "true" or value == "True" or value == "TRUE" or value == "yes" or
  value == "Yes" or value == "YES" or value == "1"
local canary = status.canaryRevision ~= nil
local rejected = status.rejectedRevisions ~= nil and #status.rejectedRevisions > 0

actions["promote"] = {
  ["disabled"] = not canary,
  ["displayName"] = "Promote the canary now",
  ["iconClass"] = "fa fa-fw fa-forward"
}
actions["abort"] = {
  ["disabled"] = not canary,
  ["displayName"] = "Abort the canary (roll back)",
  ["iconClass"] = "fa fa-fw fa-undo"
}
actions["retry"] = {
  ["disabled"] = not rejected,
  ["displayName"] = "Retry rejected revisions",
  ["iconClass"] = "fa fa-fw fa-redo"
}
actions["pause"] = {
  ["disabled"] = paused,
  ["displayName"] = "Pause the rollout",
  ["iconClass"] = "fa fa-fw fa-pause-circle"
}
actions["resume"] = {
  ["disabled"] = not paused,
  ["displayName"] = "Resume the rollout",
  ["iconClass"] = "fa fa-fw fa-play-circle"
}
return actions
