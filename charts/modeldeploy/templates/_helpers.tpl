{{/* The operator's objects are named <release>-operator ("modeldeploy-operator" for a release
named modeldeploy, the names manifests/ uses). */}}
{{- define "modeldeploy.fullname" -}}
{{- default (printf "%s-operator" .Release.Name) .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modeldeploy.serviceAccountName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* app.kubernetes.io/name and component are what the NetworkPolicy in manifests/networkpolicy
selects the operator's pods by: keep them. */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: modeldeploy
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modeldeploy.labels" -}}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "modeldeploy.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "modeldeploy.servingImage" -}}
{{ .Values.servingImage.repository }}:{{ .Values.servingImage.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "modeldeploy.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "namespaced" -}}
{{- if not .Values.watchNamespaces -}}
{{- fail "rbac.scope namespaced needs watchNamespaces: the namespaces to manage" -}}
{{- end -}}
{{- join "," .Values.watchNamespaces -}}
{{- else if ne .Values.rbac.scope "cluster" -}}
{{- fail (printf "rbac.scope must be cluster or namespaced, not %q" .Values.rbac.scope) -}}
{{- end -}}
{{- end -}}

{{/* What the operator may do, in every namespace (ClusterRole) or in each watched one (Role): the
same rules as manifests/cluster-wide/clusterrole.yaml, which a test checks. */}}
{{- define "modeldeploy.rules" -}}
# kopf watches ModelDeployments; each reconcile pass re-reads its object. Neither the operator
# nor kopf writes spec or metadata (no finalizers, kopf state lives in status), so no patch.
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch"]
# status.phase/conditions and kopf's bookkeeping under status.kopf: merge patches only.
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# Children carry an ownerReference with blockOwnerDeletion: true, which the
# OwnerReferencesPermissionEnforcement admission plugin checks against the owner's finalizers.
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
# The children, written with server-side apply, deleted when a revision is retired, watched so
# hand edits are undone at once.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The canary router for traffic.router: gateway-api (harmless without the Gateway API).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes", "grpcroutes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Canary health and pod IPs for scraping /metrics; pods are created by ReplicaSets, never by us.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Smoke-test inputs named by spec.rollout.analysis.smokeTests.configMapRef.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# Events on each ModelDeployment: POST only, never updated.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
