import { Injectable, computed, inject, signal } from '@angular/core';
import { Router } from '@angular/router';
import type { DescMessage, DescMethodUnary, MessageInitShape, MessageShape } from '@bufbuild/protobuf';

import { AdminService } from '@gen/paymesh/admin/v1/admin_pb';
import { ApiError, call } from '@shared/rest';

export { describeError } from '@shared/rest';

interface Signed {
  token: string;
  role: string;
  email: string;
}

/**
 * The operator's session: token, role, and the one way pages call the admin API.
 *
 * The token lives in this object's memory only, never in sessionStorage, localStorage or a
 * script-readable cookie: this origin also serves the public checkout, and storage would hand
 * the token to any script that runs on it later. A reload asks to sign in again.
 */
@Injectable({ providedIn: 'root' })
export class Session {
  private readonly router = inject(Router);
  private readonly state = signal<Signed | null>(null);

  readonly signedIn = computed(() => this.state() !== null);
  readonly role = computed(() => this.state()?.role ?? '');
  readonly email = computed(() => this.state()?.email ?? '');
  /** Viewers see no mutating controls; the server refuses them anyway. */
  readonly canMutate = computed(() => this.role() === 'operator');

  /** Exchanges credentials for a session; throws ApiError when refused. */
  async login(email: string, password: string): Promise<void> {
    const response = await call(AdminService.method.login, { email, password });
    this.state.set({ token: response.sessionToken, role: response.role, email });
  }

  /** Ends the session here and on the server. */
  async logout(): Promise<void> {
    const token = this.state()?.token;
    this.forget();
    if (token) {
      await call(AdminService.method.logout, {}, { headers: { Authorization: `Bearer ${token}` } }).catch(() => undefined);
    }
    await this.router.navigate(['/login']);
  }

  private forget(): void {
    this.state.set(null);
  }

  /**
   * Calls an admin RPC with the session (a write under the `Idempotency-Key` given); an expired
   * session sends the operator to login.
   */
  async api<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    init: MessageInitShape<I>,
    options: { idempotencyKey?: string } = {},
  ): Promise<MessageShape<O>> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.state()?.token ?? ''}` };
    if (options.idempotencyKey) {
      headers['Idempotency-Key'] = options.idempotencyKey;
    }
    try {
      return await call(method, init, { headers });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        this.forget();
        await this.router.navigate(['/login'], { queryParams: { expired: 1, next: this.router.url } });
      }
      throw error;
    }
  }
}
