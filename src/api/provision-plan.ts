// The plan the operator hands a pod's `replicator provision` init container,
// through the pod annotation replicator.dev/provision-plan (mounted with a
// downward-API volume). It names no secret: the init container gets the
// repository's and the replication user's credentials from its own env.
import { z } from "zod";

export const provisionPlanSchema = z.discriminatedUnion("action", [
  z.object({
    action: z.literal("restore"),
    backup: z.string().min(1),
    /** s3://bucket/prefix or file:///path */
    repository: z.string().min(1),
    cluster: z.string().min(1),
    s3: z.object({ endpoint: z.string().optional(), region: z.string().optional(), forcePathStyle: z.boolean().optional() }).optional(),
    /** mysql://HOST:PORT of the master to replicate from (the user comes from REPLICATOR_REPLICATION_USER). */
    master: z.string().min(1),
  }),
  z.object({ action: z.literal("none"), reason: z.string() }),
]);
export type ProvisionPlanDoc = z.infer<typeof provisionPlanSchema>;
