{{- define "gatehouse.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gatehouse.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway") */}}
{{- define "gatehouse.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gatehouse.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "gatehouse.gatewaySecret" -}}
{{ .Values.secrets.existingGatewaySecret | default (printf "%s-gateway" (include "gatehouse.fullname" .)) }}
{{- end -}}

{{- define "gatehouse.mcpServerSecret" -}}
{{ .Values.secrets.existingMcpServerSecret | default (printf "%s-mcp-server" (include "gatehouse.fullname" .)) }}
{{- end -}}

{{- define "gatehouse.migrationSecret" -}}
{{ .Values.secrets.existingMigrationSecret | default (printf "%s-migration" (include "gatehouse.fullname" .)) }}
{{- end -}}

{{/* Non-root, no privileges; the image writes nothing outside /tmp. */}}
{{- define "gatehouse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gatehouse.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Probes of a component: (dict "port" 8000 "ready" "/readyz") */}}
{{- define "gatehouse.probes" -}}
startupProbe:
  httpGet: { path: /healthz, port: {{ .port }} }
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: { path: /healthz, port: {{ .port }} }
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: { path: {{ .ready }}, port: {{ .port }} }
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end -}}

{{/* uvicorn serving a factory: (dict "factory" "gateway.app:create_app" "port" 8000) */}}
{{- define "gatehouse.uvicornArgs" -}}
- uvicorn
- --factory
- {{ .factory }}
- --host
- 0.0.0.0
- --port
- {{ .port | quote }}
- --no-access-log
- --timeout-graceful-shutdown
- {{ .drain | quote }}
{{- end -}}

{{/* preStop, the readiness grace, the drain and the final flush fit the pod's termination
grace period; otherwise the kubelet kills a pod mid-drain. */}}
{{- define "gatehouse.shutdown" -}}
{{- $s := .Values.shutdown -}}
{{- $needed := add $s.preStopSeconds (ceil $s.graceSeconds) $s.drainSeconds 5 -}}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) -}}
{{- fail (printf "terminationGracePeriodSeconds must be at least %d (shutdown.preStopSeconds + graceSeconds + drainSeconds + 5 s to flush)" (int $needed)) -}}
{{- end -}}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
{{- end -}}

{{- define "gatehouse.preStop" -}}
lifecycle:
  preStop:
    # Time for Services and ingresses to stop sending to this pod before it starts draining.
    exec: { command: ["sleep", {{ .Values.shutdown.preStopSeconds | quote }}] }
{{- end -}}

{{- define "gatehouse.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end -}}
