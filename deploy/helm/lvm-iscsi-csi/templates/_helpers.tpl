{{/* Chart name. */}}
{{- define "lvm-iscsi-csi.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped base name of every object: `<release>-lvm-iscsi-csi`, or the release
name alone when it already contains the chart name. Kept short enough for suffixes. */}}
{{- define "lvm-iscsi-csi.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "lvm-iscsi-csi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "lvm-iscsi-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "lvm-iscsi-csi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lvm-iscsi-csi.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The driver image. */}}
{{- define "lvm-iscsi-csi.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of the Secret holding the CHAP key. */}}
{{- define "lvm-iscsi-csi.chapSecretName" -}}
{{- default (printf "%s-chap" (include "lvm-iscsi-csi.fullname" .)) .Values.chap.existingSecret -}}
{{- end -}}

{{/* Leader-election flags of the controller sidecars (only with several replicas). */}}
{{- define "lvm-iscsi-csi.leaderElection" -}}
{{- if gt (int .Values.controller.replicas) 1 }}
- --leader-election=true
- --leader-election-namespace={{ .Release.Namespace }}
{{- end -}}
{{- end -}}

{{/* Where the controller reads the CHAP key (the Secret mounted read-only). */}}
{{- define "lvm-iscsi-csi.chapKeyDir" -}}
/etc/lvm-iscsi-csi/chap
{{- end -}}

{{/* The kubelet's directory of this driver's node socket. */}}
{{- define "lvm-iscsi-csi.nodePluginDir" -}}
{{- printf "%s/plugins/%s" (trimSuffix "/" .Values.node.kubeletDir) .Values.driverName -}}
{{- end -}}

{{/* The controller's node selector: the values', or when neither a selector nor an
affinity is given, the storage-node label (so it never lands on a node without the VG). */}}
{{- define "lvm-iscsi-csi.controllerNodeSelector" -}}
{{- if or .Values.controller.nodeSelector .Values.controller.affinity -}}
{{- toYaml .Values.controller.nodeSelector -}}
{{- else -}}
lvm-iscsi.csi.io/storage-node: "true"
{{- end -}}
{{- end -}}

{{/* The volume groups the StorageClasses use, space-separated. */}}
{{- define "lvm-iscsi-csi.volumeGroups" -}}
{{- $vgs := list -}}
{{- range .Values.storageClasses -}}
{{- $vgs = append $vgs (default $.Values.controller.defaultVolumeGroup .volumeGroup) -}}
{{- end -}}
{{- $vgs | uniq | compact | join " " -}}
{{- end -}}
