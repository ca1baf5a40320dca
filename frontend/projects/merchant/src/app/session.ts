import { Injectable, computed, inject, signal } from '@angular/core';
import { Router } from '@angular/router';
import type { DescMessage, DescMethodUnary, MessageInitShape, MessageShape } from '@bufbuild/protobuf';

import { AccountService, type AccountSession } from '@gen/paymesh/admin/v1/account_pb';
import { ApiError, call } from '@shared/rest';

/** Test or live: which of the merchant's two worlds the API calls act in. */
export type Mode = 'test' | 'live';

interface Signed {
  token: string;
  userId: string;
  email: string;
  role: string;
  merchantId: string;
  merchantName: string;
}

/** What a write sends besides its body. */
export interface WriteOptions {
  /** The `Idempotency-Key` of the form submission (see IdempotencyKey). */
  idempotencyKey?: string;
}

/**
 * The merchant user's session: token, role, mode, and the one way pages call the API.
 *
 * The token lives in this object's memory only, never in sessionStorage, localStorage or a
 * script-readable cookie: this origin also serves the public checkout, and storage would hand
 * the token to any script that runs on it later. A reload asks to sign in again.
 */
@Injectable({ providedIn: 'root' })
export class Session {
  private readonly router = inject(Router);
  private readonly state = signal<Signed | null>(null);

  /** The mode every call acts in; the shell's switch sets it. */
  readonly mode = signal<Mode>('test');
  readonly signedIn = computed(() => this.state() !== null);
  readonly role = computed(() => this.state()?.role ?? '');
  readonly email = computed(() => this.state()?.email ?? '');
  readonly userId = computed(() => this.state()?.userId ?? '');
  readonly merchantId = computed(() => this.state()?.merchantId ?? '');
  readonly merchantName = computed(() => this.state()?.merchantName ?? '');
  /** Developers and admins manage API keys and webhook endpoints; viewers see no such control. */
  readonly canDevelop = computed(() => this.role() === 'admin' || this.role() === 'developer');
  /** Only admins refund and manage the team; the server refuses everyone else anyway. */
  readonly isAdmin = computed(() => this.role() === 'admin');

  /** Exchanges credentials for a session; throws ApiError when refused. */
  async signIn(email: string, password: string): Promise<void> {
    this.remember(await call(AccountService.method.createSession, { email, password }));
  }

  /** Accepts an invitation with a new password and signs in as the new user. */
  async acceptInvite(token: string, password: string): Promise<void> {
    this.remember(await call(AccountService.method.acceptInvite, { token, password }));
  }

  /** Ends the session here and on the server. */
  async signOut(): Promise<void> {
    const token = this.state()?.token;
    this.state.set(null);
    this.mode.set('test');
    if (token) {
      await call(AccountService.method.endSession, {}, { headers: { Authorization: `Bearer ${token}` } }).catch(
        () => undefined,
      );
    }
    await this.router.navigate(['/login']);
  }

  private remember(session: AccountSession): void {
    this.mode.set('test');
    this.state.set({
      token: session.sessionToken,
      userId: session.user?.id ?? '',
      email: session.user?.email ?? '',
      role: session.user?.role ?? '',
      merchantId: session.merchant?.id ?? '',
      merchantName: session.merchant?.name ?? '',
    });
  }

  /**
   * Calls an RPC with the session, in the current mode; an expired session sends the user to
   * sign in, and back here afterwards.
   */
  async api<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    init: MessageInitShape<I>,
    options: WriteOptions = {},
  ): Promise<MessageShape<O>> {
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.state()?.token ?? ''}`,
      'Paymesh-Mode': this.mode(),
    };
    if (options.idempotencyKey) {
      headers['Idempotency-Key'] = options.idempotencyKey;
    }
    try {
      return await call(method, init, { headers });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        this.state.set(null);
        await this.router.navigate(['/login'], { queryParams: { expired: 1, next: this.router.url } });
      }
      throw error;
    }
  }
}
