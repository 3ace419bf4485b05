-- modeldeploy.io/paused: hold the canary at its current step (checks keep running); a canary
-- that starts while it is set holds at its first step.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modeldeploy.io/paused"] = "true"
return obj
