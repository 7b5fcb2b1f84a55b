// The replicator.dev/v1alpha1 API: zod schemas are the single source. The
// CRD YAML in crds/ is generated from them (`npm run gen:crds`), and the
// operator validates every spec with the same schemas. No I/O here.
import { z } from "zod";

export const GROUP = "replicator.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

const dnsName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, "must be a DNS label: lowercase letters, digits and '-'");

export const secretKeyRefSchema = z.object({
  name: dnsName.describe("Secret in the resource's namespace."),
  userKey: z.string().default("username").describe("Key holding the user name."),
  passwordKey: z.string().default("password").describe("Key holding the password."),
});

export const serverRefSchema = z
  .object({
    pod: dnsName.optional().describe("A pod running the database server."),
    statefulSet: dnsName.optional().describe("A StatefulSet of database servers; `role` picks the pod."),
    role: z
      .enum(["master", "slave"])
      .default("master")
      .describe("With statefulSet: its master, or a replicating slave. The master is the pod labelled replicator.dev/role=master, else ordinal 0."),
    port: z.number().int().min(1).max(65535).default(3306),
    credentialsSecret: secretKeyRefSchema.describe("Database credentials, passed to the Job as env from the Secret; never as args."),
  })
  .describe("Exactly one of pod or statefulSet.");
export type ServerRef = z.infer<typeof serverRefSchema>;

export const compressionEnum = z.enum(["zstd", "gzip", "none"]);

// ------------------------------------------------------------ repository

export const repositorySpecSchema = z.object({
  s3: z
    .object({
      bucket: z.string().min(3).max(63),
      prefix: z.string().default(""),
      endpoint: z.string().optional().describe("For S3-compatible stores, e.g. http://minio.storage:9000 (path-style is then used)."),
      region: z.string().default("us-east-1"),
      credentialsSecret: z
        .object({
          name: dnsName,
          accessKeyIdKey: z.string().default("AWS_ACCESS_KEY_ID"),
          secretAccessKeyKey: z.string().default("AWS_SECRET_ACCESS_KEY"),
        })
        .optional()
        .describe("Omit to use the Job's ambient credentials (IRSA, instance profile)."),
      caSecret: z
        .object({
          name: dnsName,
          key: z
            .string()
            .regex(/^[-._a-zA-Z0-9]+$/, "must be a Secret key: letters, digits, '-', '_' and '.'")
            .default("ca.crt"),
        })
        .optional()
        .describe(
          "For an https endpoint whose certificate a private CA signed: the Secret key holding that CA's PEM. The operator trusts it for its own requests; every Job gets it mounted and named by NODE_EXTRA_CA_CERTS. Omit for a publicly trusted certificate.",
        ),
    })
    .optional(),
  filesystem: z
    .object({
      claimName: dnsName.describe("A PersistentVolumeClaim mounted into every Job at /repository."),
      path: z.string().default("/").describe("Directory inside the claim."),
    })
    .optional(),
  retention: z
    .object({ keep: z.number().int().min(1).describe("Keep the newest N complete backups per cluster; never fewer than 1.") })
    .optional(),
  method: z.string().default("mysqldump").describe("Default method for backups that name none."),
  compression: compressionEnum.default("zstd"),
  syncIntervalSeconds: z.number().int().min(10).default(60).describe("How often backups in storage are mirrored as ReplicatorBackup resources."),
  schedules: z
    .array(
      z.object({
        name: dnsName,
        cron: z.string().min(1).describe("Five-field cron in UTC, or @hourly/@daily/@weekly/@monthly."),
        source: serverRefSchema,
        cluster: dnsName.optional(),
        method: z.string().optional(),
        options: z.record(z.string(), z.string()).default({}),
        suspend: z.boolean().default(false),
      }),
    )
    .default([])
    .describe("Backups to take on a schedule into this repository; each run creates a ReplicatorBackup."),
  binlogArchives: z
    .array(
      z.object({
        cluster: dnsName.optional().describe("Catalog name in the repository; defaults to the StatefulSet (or pod) name. At most one entry per cluster."),
        source: serverRefSchema.describe("The master to archive (role master): with a StatefulSet, its current master, followed when it changes."),
        flushIntervalSeconds: z.number().int().min(1).max(3600).default(60).describe("How often the binlog the master still writes is uploaded as a partial object; closed binlogs are uploaded as they close."),
        suspend: z.boolean().default(false).describe("Stop archiving (the Deployment is removed); the archive in storage is kept."),
      }),
    )
    .default([])
    .describe(
      "Binlog archives for point-in-time recovery: per entry, a Deployment (one replica, strategy Recreate) runs `replicator binlog-archive` against the cluster's current master into <cluster>/binlogs/<server_id>/.",
    ),
});
export type RepositorySpec = z.infer<typeof repositorySpecSchema>;

// ------------------------------------------------------------ backup

export const backupSpecSchema = z.object({
  repository: dnsName.default("default").describe("A ReplicatorRepository in the same namespace."),
  cluster: dnsName.optional().describe("Catalog name in the repository; defaults to the StatefulSet (or pod) name."),
  source: serverRefSchema.optional().describe("The server to back up. Absent only on resources that mirror a backup found in storage."),
  method: z
    .string()
    .optional()
    .describe(
      "A built-in method (mysqldump, mysqldump_parallel, mariabackup, volumesnapshot; pg_dump, pg_basebackup for PostgreSQL); defaults to the repository's. mysqldump_parallel dumps with several processes from one snapshot (option threads) and restores over several connections; mariabackup runs on the source pod's node with its data volume mounted; volumesnapshot is run by the operator: a CSI VolumeSnapshot of the source's data volume under FLUSH TABLES WITH READ LOCK (options lockTimeoutSeconds, readyTimeoutSeconds, volumeSnapshotClassName).",
    ),
  image: z.string().optional().describe("A third-party plugin image that implements docs/plugins.md."),
  options: z.record(z.string(), z.string()).default({}).describe("Method options, e.g. lock: ftwrl."),
});
export type BackupSpec = z.infer<typeof backupSpecSchema>;

export const conditionSchema = z.object({
  type: z.string(),
  status: z.enum(["True", "False", "Unknown"]),
  reason: z.string(),
  message: z.string(),
  lastTransitionTime: z.string(),
  observedGeneration: z.number().int().optional(),
});
export type Condition = z.infer<typeof conditionSchema>;

export const phaseEnum = z.enum(["Pending", "Running", "Completed", "Failed"]);
export type Phase = z.infer<typeof phaseEnum>;

export const positionStatusSchema = z.object({
  role: z.string().optional(),
  gtid: z.string().optional(),
  file: z.string().optional(),
  position: z.number().int().optional(),
});

export const backupStatusSchema = z.object({
  phase: phaseEnum.optional(),
  conditions: z.array(conditionSchema).optional(),
  observedGeneration: z.number().int().optional(),
  backupName: z.string().optional().describe("The backup's name in storage."),
  cluster: z.string().optional(),
  method: z.string().optional(),
  sourcePod: z.string().optional(),
  size: z.number().int().optional(),
  sizeHuman: z.string().optional(),
  sha256: z.string().optional(),
  position: z.string().optional().describe("GTID, or file:pos."),
  replication: positionStatusSchema.optional(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  jobName: z.string().optional(),
  message: z.string().optional(),
  /** True when the resource mirrors a backup found in storage (catalog sync). */
  imported: z.boolean().optional(),
});
export type BackupStatus = z.infer<typeof backupStatusSchema>;

// ------------------------------------------------------------ restore

export const restoreSpecSchema = z.object({
  repository: dnsName.default("default"),
  cluster: dnsName.describe("Catalog name in the repository to restore from."),
  target: serverRefSchema,
  backup: z.string().default("latest").describe("`latest`, or a backup name from `kubectl replicator list`."),
  before: z.string().optional().describe("Instead of backup: the newest backup at or before this time (RFC 3339)."),
  until: z
    .string()
    .optional()
    .describe(
      "Point-in-time recovery, instead of backup/before: restore the newest logical backup before this time (RFC 3339), then replay the cluster's binlog archive up to, not including, the first transaction at or after it.",
    ),
  untilGtid: z
    .string()
    .regex(/^\d+-\d+-\d+$/, "must be a GTID DOMAIN-SERVER-SEQUENCE, e.g. 0-1-42")
    .optional()
    .describe("Point-in-time recovery up to, not including, this GTID (instead of until)."),
  replicateFrom: serverRefSchema.optional().describe("Make the target a slave of this server at the backup's position."),
  force: z.boolean().default(false).describe("Overwrite a target that already has tables."),
  options: z.record(z.string(), z.string()).default({}),
  volume: z
    .object({
      claimName: dnsName.describe("The PersistentVolumeClaim to create; it must not exist."),
      storageClassName: z.string().optional().describe("Default: the source volume's."),
      size: z.string().optional().describe("Default: the source volume's size (never less than the snapshot's restoreSize)."),
      accessModes: z.array(z.string()).optional().describe("Default: [ReadWriteOnce]."),
    })
    .optional()
    .describe(
      "For volumesnapshot backups: create this PVC with the backup's VolumeSnapshot as its dataSource. The restore completes once the target pod runs on it and, with replicateFrom, replicates from the backup's position.",
    ),
});
export type RestoreSpec = z.infer<typeof restoreSpecSchema>;

export const restoreStatusSchema = z.object({
  phase: phaseEnum.optional(),
  conditions: z.array(conditionSchema).optional(),
  observedGeneration: z.number().int().optional(),
  backupName: z.string().optional(),
  until: z.string().optional().describe("Point-in-time recovery: the target (a time, or GTID ...)."),
  pointInTime: z
    .object({
      fromGtid: z.string().optional().describe("The first archived transaction replayed."),
      stopGtid: z.string().optional().describe("The first transaction not replayed (the target); absent: to the end of the archive."),
      stopTime: z.string().optional(),
      binlogs: z.array(z.string()).optional().describe("The archived binlogs replayed."),
      replayed: z.number().int().optional().describe("Transactions replayed from the archive."),
    })
    .optional(),
  targetPod: z.string().optional(),
  position: z.string().optional(),
  replicating: z.boolean().optional(),
  secondsBehindMaster: z.number().int().optional(),
  startedAt: z.string().optional(),
  finishedAt: z.string().optional(),
  jobName: z.string().optional(),
  message: z.string().optional(),
});
export type RestoreStatus = z.infer<typeof restoreStatusSchema>;

export const binlogArchiveStatusSchema = z.object({
  cluster: z.string(),
  masterPod: z.string().optional().describe("The master pod the archiver reads from."),
  serverId: z.number().int().optional().describe("The master's server_id: its binlogs go to <cluster>/binlogs/<serverId>/."),
  deployment: z.string().optional(),
  ready: z.boolean().optional().describe("The archiver's pod is running and ready."),
  firstRecoverableTime: z.string().optional().describe("The earliest time a point-in-time restore can reach: the oldest logical backup with a GTID position that the archive continues without a gap."),
  lastRecoverableTime: z.string().optional().describe("The time of the newest archived transaction."),
  lastArchivedFile: z.string().optional().describe("The newest archived binlog (`.partial` while the master still writes it)."),
  lagSeconds: z.number().int().optional().describe("0 when the archive holds the master's whole GTID position; else now - lastRecoverableTime, at the last catalog sync."),
  lastSyncTime: z.string().optional().describe("When the archive was last read from storage."),
  message: z.string().optional(),
  conditions: z.array(conditionSchema).optional().describe("Archiving: True (ArchiverRunning), or False with ArchiveGap, ArchiverFailed, ArchiverNotReady, SourceNotReady, InvalidSpec, Suspended."),
});
export type BinlogArchiveStatus = z.infer<typeof binlogArchiveStatusSchema>;

export const repositoryStatusSchema = z.object({
  conditions: z.array(conditionSchema).optional(),
  observedGeneration: z.number().int().optional(),
  url: z.string().optional(),
  backups: z.number().int().optional(),
  lastSyncTime: z.string().optional(),
  schedules: z
    .array(z.object({ name: z.string(), lastScheduleTime: z.string().optional(), lastBackup: z.string().optional(), nextScheduleTime: z.string().optional() }))
    .optional(),
  binlogArchives: z.array(binlogArchiveStatusSchema).optional().describe("One per spec.binlogArchives entry."),
});
export type RepositoryStatus = z.infer<typeof repositoryStatusSchema>;

// ------------------------------------------------------------ objects

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean; blockOwnerDeletion?: boolean }[];
}

export interface Resource<Spec, Status> {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec: Spec;
  status?: Status;
}

export type ReplicatorBackup = Resource<z.input<typeof backupSpecSchema>, BackupStatus>;
export type ReplicatorRestore = Resource<z.input<typeof restoreSpecSchema>, RestoreStatus>;
export type ReplicatorRepository = Resource<z.input<typeof repositorySpecSchema>, RepositoryStatus>;

export interface KindInfo {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  spec: z.ZodType;
  status: z.ZodType;
  printerColumns: { name: string; type: string; jsonPath: string; priority?: number; description?: string }[];
  validations: Record<string, { rule: string; message: string }[]>;
}

const serverRefRules = [
  { rule: "has(self.pod) != has(self.statefulSet)", message: "set exactly one of pod or statefulSet" },
];

export const KINDS: KindInfo[] = [
  {
    kind: "ReplicatorRepository",
    plural: "replicatorrepositories",
    singular: "replicatorrepository",
    shortNames: ["rrepo"],
    spec: repositorySpecSchema,
    status: repositoryStatusSchema,
    printerColumns: [
      { name: "URL", type: "string", jsonPath: ".status.url" },
      { name: "Keep", type: "integer", jsonPath: ".spec.retention.keep" },
      { name: "Backups", type: "integer", jsonPath: ".status.backups" },
      { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ],
    validations: { "": [{ rule: "has(self.s3) != has(self.filesystem)", message: "set exactly one of s3 or filesystem" }] },
  },
  {
    kind: "ReplicatorBackup",
    plural: "replicatorbackups",
    singular: "replicatorbackup",
    shortNames: ["rbackup", "rbk"],
    spec: backupSpecSchema,
    status: backupStatusSchema,
    printerColumns: [
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
      { name: "Method", type: "string", jsonPath: ".status.method" },
      { name: "Size", type: "string", jsonPath: ".status.sizeHuman" },
      { name: "Position", type: "string", jsonPath: ".status.position" },
      { name: "Backup", type: "string", jsonPath: ".status.backupName", priority: 1 },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ],
    validations: {
      source: serverRefRules,
      "": [{ rule: "!(has(self.method) && has(self.image))", message: "set method or image, not both" }],
    },
  },
  {
    kind: "ReplicatorRestore",
    plural: "replicatorrestores",
    singular: "replicatorrestore",
    shortNames: ["rrestore", "rrs"],
    spec: restoreSpecSchema,
    status: restoreStatusSchema,
    printerColumns: [
      { name: "Phase", type: "string", jsonPath: ".status.phase" },
      { name: "Backup", type: "string", jsonPath: ".status.backupName" },
      { name: "Target", type: "string", jsonPath: ".status.targetPod" },
      { name: "Replicating", type: "boolean", jsonPath: ".status.replicating" },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ],
    validations: {
      target: serverRefRules,
      replicateFrom: serverRefRules,
      "": [
        { rule: "!(has(self.before) && has(self.backup) && self.backup != 'latest')", message: "set backup or before, not both" },
        { rule: "!(has(self.until) && has(self.untilGtid))", message: "set until or untilGtid, not both" },
        {
          rule: "!((has(self.until) || has(self.untilGtid)) && (has(self.before) || (has(self.backup) && self.backup != 'latest') || has(self.replicateFrom) || has(self.volume)))",
          message: "until/untilGtid choose the base backup themselves: do not set backup, before, replicateFrom or volume with them",
        },
      ],
    },
  },
];

/** Parse a spec; on failure, the zod path and message as one line (for Ready=False InvalidSpec). */
export function validateSpec<T>(schema: z.ZodType<T>, spec: unknown): { ok: true; value: T } | { ok: false; message: string } {
  const r = schema.safeParse(spec ?? {});
  if (r.success) return { ok: true, value: r.data };
  const issue = r.error.issues[0];
  const path = ["spec", ...(issue?.path ?? []).map(String)].join(".");
  return { ok: false, message: `${path}: ${issue?.message ?? "invalid"}` };
}

export function validateServerRef(ref: ServerRef, field: string): string | undefined {
  if (Boolean(ref.pod) === Boolean(ref.statefulSet)) return `spec.${field}: set exactly one of pod or statefulSet`;
  return undefined;
}
