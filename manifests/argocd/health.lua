-- Argo CD health check for modeldeploy.io/ModelDeployment.
-- The status follows kstatus (observedGeneration; Ready, Reconciling and Stalled conditions);
-- phase and the rollout fields make the message. Written for Argo CD's default sandbox for
-- argocd-cm scripts: no Lua standard library beyond the base functions (no string or math).
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function message(c)
  if c == nil or c.message == nil then
    return ""
  end
  return c.message
end

local function truthy(value)
  return value == "true" or value == "True" or value == "TRUE" or value == "yes" or
    value == "Yes" or value == "YES" or value == "1"
end

-- "canary c4d8be1899 at 25% → 33.3%, step 1/3": desired → effective weight, as kubectl shows it.
local function canary(status)
  local text = "canary " .. status.canaryRevision
  if status.desiredWeight ~= nil then
    if status.weightSummary ~= nil and status.effectiveWeight ~= status.desiredWeight then
      text = text .. " at " .. status.weightSummary
    else
      text = text .. " at " .. status.desiredWeight .. "%"
    end
  end
  local rollout = obj.spec.rollout
  if status.currentStep ~= nil and rollout ~= nil and rollout.steps ~= nil then
    text = text .. ", step " .. (status.currentStep + 1) .. "/" .. #rollout.steps
  end
  if status.analysis ~= nil and status.analysis.withoutStable then
    text = text .. "; stable " .. status.stableRevision .. " has no ready pod"
  end
  return text
end

-- "errorRate 100% vs 5% (revision c4d8be1899)". The fields are used only when they agree with
-- the record's message; otherwise the message is the summary.
local function rollback(status)
  local record = status.lastRollback
  if record == nil then
    return message(condition(status, "Degraded"))
  end
  local text = record.message
  if record.check ~= nil and record.observedValue ~= nil and record.threshold ~= nil and
      record.message == record.check .. " " .. record.observedValue .. " broke " .. record.threshold then
    text = record.check .. " " .. record.observedValue .. " vs " .. record.threshold
  end
  if text == nil then
    text = tostring(record.check)
  end
  return text .. " (revision " .. record.revision .. ")"
end

local status = obj.status
if status == nil or (status.phase == nil and status.observedGeneration == nil) then
  hs.status = "Missing"
  local namespace = obj.metadata.namespace
  if namespace == nil then
    namespace = "default"
  end
  hs.message = "no status yet: no modeldeploy operator has reconciled this ModelDeployment " ..
    "(is one running and watching namespace " .. namespace .. "?)"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  local seen = "none"
  if status.observedGeneration ~= nil then
    seen = status.observedGeneration
  end
  hs.message = "waiting for the operator to observe generation " .. generation ..
    " (status is of generation " .. seen .. ")"
  return hs
end

local phase = status.phase
local stalled = condition(status, "Stalled")
local degraded = condition(status, "Degraded")
local progressing = condition(status, "Progressing")
local reconciling = condition(status, "Reconciling")

if phase == "Ready" then
  if reconciling ~= nil and reconciling.status == "True" then
    -- e.g. RolloutQueued: an operator-caused rollout waits for a free slot
    hs.status = "Progressing"
    hs.message = reconciling.reason .. ": " .. message(reconciling)
    return hs
  end
  hs.status = "Healthy"
  hs.message = "revision " .. status.stableRevision
  if status.stableVersion ~= nil then
    hs.message = hs.message .. " (" .. status.stableVersion .. ")"
  end
  hs.message = hs.message .. " serves: " .. message(condition(status, "Ready"))
  return hs
end

if phase == "Paused" then
  if degraded ~= nil and degraded.status == "True" then
    -- onFailure: Pause — the canary failed its checks and waits for a person
    hs.status = "Degraded"
    hs.message = "canary failed, waiting for a person (promote or abort): " .. message(degraded)
    return hs
  end
  if stalled ~= nil and stalled.status == "True" then
    -- a hold (SmokeInputsInvalid, PodsUnreachable, ...): not the canary's fault
    hs.status = "Suspended"
    hs.message = "waiting: " .. message(stalled)
    return hs
  end
  hs.status = "Suspended"
  local by = "spec.rollout.paused"
  if obj.metadata.annotations ~= nil and truthy(obj.metadata.annotations["modeldeploy.io/paused"]) then
    by = "annotation modeldeploy.io/paused"
  end
  if status.canaryRevision ~= nil then
    hs.message = "paused by " .. by .. ": " .. canary(status)
  else
    hs.message = "paused by " .. by
  end
  return hs
end

if phase == "RollingBack" then
  hs.status = "Degraded"
  hs.message = "rolling back: " .. rollback(status)
  return hs
end

if phase == "Degraded" then
  hs.status = "Degraded"
  if progressing ~= nil and progressing.reason == "RolledBack" then
    hs.message = "rolled back: " .. rollback(status)
  else
    hs.message = message(degraded)
  end
  return hs
end

if phase == "Progressing" and status.canaryRevision ~= nil then
  hs.status = "Progressing"
  hs.message = canary(status)
  return hs
end

if phase == "Progressing" or phase == "Pending" then
  hs.status = "Progressing"
  hs.message = message(progressing)
  return hs
end

hs.status = "Unknown"
hs.message = "phase " .. tostring(phase) .. " is not known to this health check"
return hs
