{{/* The chart's name. */}}
{{- define "converge.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's name for its objects: RELEASE-converge, or RELEASE when it already says converge. */}}
{{- define "converge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods of one role: dict "root" $ "role" "order". */}}
{{- define "converge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "converge.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{/* Every label of an object of one role: dict "root" $ "role" "order". */}}
{{- define "converge.labels" -}}
{{ include "converge.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: converge
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The image of every role. */}}
{{- define "converge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The name of a role's Service: dict "root" $ "role" "order". */}}
{{- define "converge.serviceName" -}}
{{- printf "%s-%s" (include "converge.fullname" .root) .role | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The broker's URLs. */}}
{{- define "converge.natsURL" -}}
{{- .Values.broker.url | default (printf "nats://%s-nats:4222" .Release.Name) -}}
{{- end -}}

{{/* An environment variable from the Secret: dict "root" $ "env" "CONVERGE_API_KEY" "key" "apiKey". */}}
{{- define "converge.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.secrets.name }}
      key: {{ index .root.Values.secrets.keys .key }}
{{- end -}}

{{/* What a client of the broker is told. */}}
{{- define "converge.natsEnv" -}}
- name: CONVERGE_NATS
  value: {{ include "converge.natsURL" . | quote }}
- name: CONVERGE_NATS_USER
  value: {{ .Values.broker.user | quote }}
{{ include "converge.secretEnv" (dict "root" . "env" "CONVERGE_NATS_PASSWORD" "key" "natsPassword") }}
{{- end -}}

{{/* The environment of one role: dict "root" $ "role" "order". */}}
{{- define "converge.env" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .role -}}
- name: CONVERGE_ADDR
  value: {{ printf "0.0.0.0:%v" $v.port | quote }}
- name: CONVERGE_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
{{- if or (eq .role "order") (eq .role "inventory") }}
{{ include "converge.secretEnv" (dict "root" $root "env" (printf "CONVERGE_%s_DB" (upper .role)) "key" (printf "%sDatabaseURL" .role)) }}
- name: CONVERGE_CACHE
  value: {{ if $root.Values.redis.url }}{{ printf "%s/%v" (trimSuffix "/" $root.Values.redis.url) $v.redisDB | quote }}{{ else }}"memory"{{ end }}
- name: CONVERGE_CACHE_TTL
  value: {{ $v.cacheTTL | quote }}
- name: CONVERGE_RELAY_LEASE
  value: {{ $v.relayLease | quote }}
- name: CONVERGE_INSTANCE
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{ include "converge.natsEnv" $root }}
{{- end }}
{{- if eq .role "inventory" }}
- name: CONVERGE_SEED
  value: {{ $v.seed | quote }}
{{- end }}
{{- if eq .role "gateway" }}
{{ include "converge.secretEnv" (dict "root" $root "env" "CONVERGE_API_KEY" "key" "apiKey") }}
{{ include "converge.secretEnv" (dict "root" $root "env" "CONVERGE_ADMIN_KEY" "key" "adminKey") }}
- name: CONVERGE_ORDER_URL
  value: {{ printf "http://%s:%v" (include "converge.serviceName" (dict "root" $root "role" "order")) $root.Values.order.port | quote }}
- name: CONVERGE_INVENTORY_URL
  value: {{ printf "http://%s:%v" (include "converge.serviceName" (dict "root" $root "role" "inventory")) $root.Values.inventory.port | quote }}
{{- end }}
{{- if eq .role "lb" }}
- name: CONVERGE_GATEWAY_URL
  value: {{ printf "http://%s:%v" (include "converge.serviceName" (dict "root" $root "role" "gateway")) $root.Values.gateway.port | quote }}
- name: CONVERGE_LB_POLICY
  value: {{ $v.policy | quote }}
{{- end }}
{{- end -}}
