{{/* Names and labels. */}}
{{- define "stead.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stead.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "stead.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "stead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "root" $ "component" "worker"). */}}
{{- define "stead.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stead.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "stead.componentLabels" -}}
{{ include "stead.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "stead.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "stead.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stead.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "stead.opaUrl" -}}
{{- if .Values.opa.enabled -}}
{{- printf "http://%s-opa:%v" (include "stead.fullname" .) .Values.opa.port -}}
{{- else -}}
{{- required "opa.externalUrl is required when opa.enabled is false" .Values.opa.externalUrl -}}
{{- end -}}
{{- end -}}

{{/* A secretKeyRef env entry: include with (dict "name" "STEAD_X" "ref" .Values.x.secret). */}}
{{- define "stead.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.name }}
      key: {{ .ref.key }}
{{- end -}}

{{/*
Environment shared by every Stead process that talks to Temporal: where Temporal is, how
to authenticate, the codec keyring, keys, OPA. Credentials come from Secrets only.
*/}}
{{- define "stead.temporalEnv" -}}
- name: STEAD_HOME
  value: /var/lib/stead
- name: STEAD_LOG_FORMAT
  value: json
- name: STEAD_TEMPORAL_ADDRESS
  value: {{ required "temporal.address is required" .Values.temporal.address | quote }}
- name: STEAD_TEMPORAL_NAMESPACE
  value: {{ .Values.temporal.namespace | quote }}
- name: STEAD_TASK_QUEUE
  value: {{ .Values.temporal.taskQueue | quote }}
{{- if .Values.temporal.tls }}
- name: STEAD_TEMPORAL_TLS
  value: {{ .Values.temporal.tls | quote }}
{{- end }}
{{- if .Values.temporal.apiKeySecret.name }}
{{ include "stead.secretEnv" (dict "name" "STEAD_TEMPORAL_API_KEY" "ref" .Values.temporal.apiKeySecret) }}
{{- end }}
{{- if .Values.temporal.mtls.secretName }}
- name: STEAD_TEMPORAL_TLS_CERT
  value: /etc/stead/temporal-tls/client.crt
- name: STEAD_TEMPORAL_TLS_KEY
  value: /etc/stead/temporal-tls/client.key
- name: STEAD_TEMPORAL_TLS_CA
  value: /etc/stead/temporal-tls/ca.crt
{{- end }}
{{- if .Values.codec.keyringSecret.name }}
- name: STEAD_CODEC_KEYRING
  value: /etc/stead/codec/keyring.json
{{- end }}
- name: STEAD_KEYS_DIR
  value: /etc/stead/keys
{{- with .Values.fairness.weights }}
- name: STEAD_FAIRNESS_WEIGHTS
  value: {{ toJson . | quote }}
{{- end }}
{{- end -}}

{{/* Environment of a worker (full or edge): the database, Qdrant, metrics, anchors. */}}
{{- define "stead.workerEnv" -}}
{{ include "stead.secretEnv" (dict "name" "STEAD_POSTGRES_DSN" "ref" .Values.postgres.dsnSecret) }}
{{- if .Values.qdrant.url }}
- name: STEAD_QDRANT_URL
  value: {{ .Values.qdrant.url | quote }}
{{- end }}
{{- if .Values.qdrant.apiKeySecret.name }}
{{ include "stead.secretEnv" (dict "name" "STEAD_QDRANT_API_KEY" "ref" .Values.qdrant.apiKeySecret) }}
{{- end }}
- name: STEAD_METRICS_PORT
  value: {{ .Values.worker.metricsPort | quote }}
- name: STEAD_POLICY_DIR
  value: /app/policies
- name: STEAD_PLAYBOOK_DIR
  value: /app/playbooks
- name: STEAD_AUDIT_ANCHOR_DIR
  value: /var/lib/stead-anchors
{{- with .Values.worker.maxActivities }}
- name: STEAD_WORKER_MAX_ACTIVITIES
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "stead.extraEnv" -}}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "stead.envFrom" -}}
{{- range . }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{/* Volumes of a Stead pod talking to Temporal; include with (dict "root" $ "keys" NAME). */}}
{{- define "stead.volumes" -}}
- name: home
  emptyDir:
    sizeLimit: {{ .root.Values.scratchSizeLimit }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.scratchSizeLimit }}
- name: keys
  secret:
    secretName: {{ .keys }}
    defaultMode: 0440
{{- with .root.Values.temporal.mtls }}
{{- if .secretName }}
- name: temporal-tls
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
    items:
      - {key: {{ .certKey }}, path: client.crt}
      - {key: {{ .keyKey }}, path: client.key}
      - {key: {{ .caKey }}, path: ca.crt}
{{- end }}
{{- end }}
{{- with .root.Values.codec.keyringSecret }}
{{- if .name }}
- name: codec
  secret:
    secretName: {{ .name }}
    defaultMode: 0440
    items:
      - {key: {{ .key }}, path: keyring.json}
{{- end }}
{{- end }}
{{- end -}}

{{- define "stead.volumeMounts" -}}
- {name: home, mountPath: /var/lib/stead}
- {name: tmp, mountPath: /tmp}
- {name: keys, mountPath: /etc/stead/keys, readOnly: true}
{{- if .Values.temporal.mtls.secretName }}
- {name: temporal-tls, mountPath: /etc/stead/temporal-tls, readOnly: true}
{{- end }}
{{- if .Values.codec.keyringSecret.name }}
- {name: codec, mountPath: /etc/stead/codec, readOnly: true}
{{- end }}
{{- end -}}

{{- define "stead.anchorsVolume" -}}
- name: anchors
{{- if .Values.auditAnchors.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.auditAnchors.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "stead.podSpecCommon" -}}
serviceAccountName: {{ include "stead.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "stead.publicKeys" -}}
{{- default .Values.keys.secretName .Values.keys.publicSecretName -}}
{{- end -}}

{{/* OPA's URL and decision token: the worker and the webhook ask policy; edges do not. */}}
{{- define "stead.opaEnv" -}}
- name: STEAD_OPA_URL
  value: {{ include "stead.opaUrl" . | quote }}
{{ include "stead.secretEnv" (dict "name" "STEAD_OPA_TOKEN" "ref" .Values.opa.tokenSecret) }}
{{- end -}}

{{/* Hook Jobs run before the release's ServiceAccount exists: the namespace default, no token. */}}
{{- define "stead.hookPodSpec" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}
