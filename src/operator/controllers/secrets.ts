// Reading which keys a Secret holds (never their values), so that a missing
// Secret or key is reported on the resource that needs it, by name, instead of
// surfacing as a Job pod stuck in CreateContainerConfigError or a login as the
// wrong user.
import { isNotFound, type KubeRest } from "../../kube/rest.js";
import type { RepositorySpec, ServerRef } from "../../api/v1alpha1.js";
import { nsPath } from "../host.js";
import { secretProblem } from "./shared.js";

/** The key names of a Secret, or undefined when it does not exist. */
export async function observeSecretKeys(rest: KubeRest, ns: string, name: string): Promise<string[] | undefined> {
  try {
    const s = await rest.get<{ data?: Record<string, string> }>(nsPath("/api/v1", ns, "secrets", name));
    return Object.keys(s.data ?? {});
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** The first problem with the Secret a ServerRef names (spec.<field>.credentialsSecret), or undefined. */
export async function serverRefSecretProblem(rest: KubeRest, ns: string, ref: ServerRef, field: string): Promise<string | undefined> {
  const s = ref.credentialsSecret;
  const at = `spec.${field}.credentialsSecret`;
  return secretProblem(
    s.name,
    await observeSecretKeys(rest, ns, s.name),
    [
      { key: s.userKey, field: `${at}.userKey` },
      { key: s.passwordKey, field: `${at}.passwordKey` },
    ],
    at,
    `Add the key, or set ${at}.userKey/passwordKey to the keys it has`,
  );
}

/** The first problem with a repository's S3 credentials Secret, or undefined (none: ambient credentials). */
export async function repositorySecretProblem(rest: KubeRest, ns: string, repoName: string, repo: RepositorySpec): Promise<string | undefined> {
  const s = repo.s3?.credentialsSecret;
  if (!s) return undefined;
  const at = `ReplicatorRepository ${repoName} spec.s3.credentialsSecret`;
  return secretProblem(
    s.name,
    await observeSecretKeys(rest, ns, s.name),
    [
      { key: s.accessKeyIdKey, field: `${at}.accessKeyIdKey` },
      { key: s.secretAccessKeyKey, field: `${at}.secretAccessKeyKey` },
    ],
    at,
    "Add the key, or set accessKeyIdKey/secretAccessKeyKey to the keys it has",
  );
}
