-- Remove modeldeploy.io/paused: the canary goes on from its step. A pause declared in Git
-- (spec.rollout.paused) stays until Git changes it.
if obj.metadata.annotations ~= nil then
  obj.metadata.annotations["modeldeploy.io/paused"] = nil
end
return obj
